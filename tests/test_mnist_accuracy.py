"""The MNIST project as a user runs it: full training on 1 and 8 processes reaches 95%."""
import os

import pytest

from tests.helpers.runs import read_metrics, train_sh


def final_accuracy(output_dir: str) -> float:
    return [m["Acc@1"] for m in read_metrics(output_dir) if "Acc@1" in m][-1]


@pytest.mark.parametrize("nproc", [1, 8])
def test_mnist_project_reaches_95_percent(tmp_path, nproc):
    output_dir = str(tmp_path / "out")
    train_sh(nproc, output_dir)
    accuracy = final_accuracy(output_dir)
    assert accuracy >= 95.0, accuracy
    # The best checkpoint is the one that scored it; --eval-only on it scores the same.
    proc = train_sh(
        1,
        str(tmp_path / "eval"),
        f"train.load_weight={os.path.join(output_dir, 'model_best')}",
        "--eval-only",
    )
    assert f"'Acc@1': {max(m['Acc@1'] for m in read_metrics(output_dir) if 'Acc@1' in m)}" in proc.stdout + proc.stderr
