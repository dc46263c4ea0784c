"""libai.utils.curves reads a run's metrics.json and draws it; tools/plot_metrics.py is its CLI."""
import json
import subprocess
import sys

import pytest

from libai.utils.curves import default_panels, plot_curves, read_series
from tests.helpers.runs import REPO

sys.path.insert(0, REPO)
from tools.plot_metrics import main  # noqa: E402

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _write_metrics(path, records, tail=""):
    path.write_text("\n".join(json.dumps(r) for r in records) + "\n" + tail)
    return str(path)


def test_series_by_key_with_eval_only_points(tmp_path):
    records = [{"iteration": 0, "total_loss": 3.0}, {"iteration": 1, "total_loss": 2.0, "PPL": 9.0}]
    path = _write_metrics(tmp_path / "metrics.json", records, tail='{"iteration": 2, "total_lo')
    series = read_series(path, ["total_loss", "PPL"])
    # The line cut short by a killed process is skipped.
    assert series == {"total_loss": ([1, 2], [3.0, 2.0]), "PPL": ([2], [9.0])}


def test_default_panels_group_losses_then_lr_then_metrics(tmp_path):
    records = [
        {"iteration": 0, "data_time": 0.1, "eta_seconds": 3.0, "lm_loss": 2.0, "lr": 0.1, "time": 0.2, "total_loss": 2.5},
        {"iteration": 1, "Acc@1": 50.0, "Acc@5": 90.0, "lm_loss": 1.0, "lr": 0.1, "total_loss": 1.5},
    ]
    path = _write_metrics(tmp_path / "metrics.json", records)
    assert default_panels(path) == [["total_loss", "lm_loss"], ["lr"], ["Acc@1"], ["Acc@5"]]
    png = plot_curves(path, str(tmp_path / "curves.png"))
    with open(png, "rb") as f:
        assert f.read(8) == PNG_SIGNATURE
    assert sorted(p.name for p in tmp_path.iterdir()) == ["curves.png", "metrics.json"]


def test_plotting_leaves_matplotlib_global_state_alone(tmp_path):
    # In a fresh interpreter: pyplot (its backend and figure registry) is never imported.
    path = _write_metrics(tmp_path / "metrics.json", [{"iteration": 0, "total_loss": 1.0}])
    script = (
        "import sys; from libai.utils.curves import plot_curves; "
        f"plot_curves({path!r}, {str(tmp_path / 'curves.png')!r}); "
        "assert 'matplotlib.pyplot' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", script], check=True)


def test_cli_writes_the_png_and_missing_run_or_key_is_one_line(tmp_path, capsys):
    assert main([str(tmp_path)]) == 1
    assert "metrics.json does not exist" in capsys.readouterr().err
    _write_metrics(tmp_path / "metrics.json", [{"iteration": 0, "total_loss": 1.0}])
    assert main([str(tmp_path), "--keys", "PPL"]) == 1
    assert "no values for ['PPL']" in capsys.readouterr().err
    assert main([str(tmp_path), "--keys", "total_loss"]) == 0
    assert (tmp_path / "curve.png").read_bytes()[:8] == PNG_SIGNATURE
    with pytest.raises(KeyError, match="no values for"):
        read_series(str(tmp_path / "metrics.json"), ["PPL"])


def test_curves_writer_draws_after_each_evaluation_and_at_close(tmp_path):
    from libai.utils.events import CurvesWriter, EventStorage, JSONWriter

    metrics, png = str(tmp_path / "metrics.json"), tmp_path / "curves.png"
    writers = [JSONWriter(metrics, window_size=1), CurvesWriter(metrics, str(png), eval_metric="Acc@1")]
    with EventStorage() as storage:
        for iteration, evaluated in [(0, False), (1, True), (2, False)]:
            storage.iter = iteration
            storage.put_scalar("total_loss", 1.0 / (iteration + 1))
            if evaluated:
                storage.put_scalar("Acc@1", 50.0, smoothing_hint=False)
            png.unlink(missing_ok=True)
            for writer in writers:
                writer.write()
            assert png.exists() == evaluated, iteration
        for writer in writers:
            writer.close()
    assert png.read_bytes()[:8] == PNG_SIGNATURE
