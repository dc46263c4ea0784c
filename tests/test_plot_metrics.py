"""tools/plot_metrics.py reads the curves of a run's metrics.json."""
import json
import sys

import pytest

from tests.helpers.runs import REPO

sys.path.insert(0, REPO)
from tools.plot_metrics import main, read_series  # noqa: E402


def test_series_by_key_with_eval_only_points(tmp_path):
    records = [{"iteration": 0, "total_loss": 3.0}, {"iteration": 1, "total_loss": 2.0, "PPL": 9.0}]
    (tmp_path / "metrics.json").write_text("\n".join(json.dumps(r) for r in records) + "\n")
    series = read_series(str(tmp_path), ["total_loss", "PPL"])
    assert series == {"total_loss": ([1, 2], [3.0, 2.0]), "PPL": ([2], [9.0])}


def test_missing_run_or_key_is_one_line(tmp_path, capsys):
    assert main([str(tmp_path)]) == 1
    assert "metrics.json does not exist" in capsys.readouterr().err
    (tmp_path / "metrics.json").write_text(json.dumps({"iteration": 0, "total_loss": 1.0}) + "\n")
    with pytest.raises(KeyError, match="no values for"):
        read_series(str(tmp_path), ["PPL"])
