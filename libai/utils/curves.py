"""Pictures of a run's curves from its `metrics.json` (one JSON object per logged iteration,
as `libai.utils.events.JSONWriter` writes it).

    series = read_series("output/mnist/metrics.json", ["total_loss", "Acc@1"])
    plot_curves("output/mnist/metrics.json", "output/mnist/curves.png")

Drawing uses matplotlib's object API on an Agg canvas: no pyplot, so nothing global in
matplotlib (its backend, open figures) changes for the program that calls it.
"""
from __future__ import annotations

import json
import os
from typing import Dict, List, Optional, Sequence, Tuple

__all__ = ["read_series", "default_panels", "plot_curves"]

Series = Tuple[List[int], List[float]]

# Scalars about speed, not learning: left out of the default picture.
_TIMING_KEYS = ("time", "data_time", "eta_seconds")


def _records(json_file: str) -> List[dict]:
    if not os.path.isfile(json_file):
        raise FileNotFoundError(f"{json_file} does not exist: pass a training run's metrics.json")
    with open(json_file) as f:
        # A line cut short by a killed process is skipped, as JSONWriter drops it on resume.
        return [record for record in map(_parse, f) if record is not None]


def _parse(line: str) -> Optional[dict]:
    try:
        record = json.loads(line)
    except ValueError:
        return None
    return record if isinstance(record, dict) and "iteration" in record else None


def read_series(json_file: str, keys: Sequence[str]) -> Dict[str, Series]:
    """{key: (iterations done, values)} of each key in the JSON-lines `json_file`; a key
    with no value at all is a `KeyError` naming it."""
    series: Dict[str, Series] = {key: ([], []) for key in keys}
    for record in _records(json_file):
        for key in keys:
            if key in record:
                # Iteration i's values are those after i + 1 steps.
                series[key][0].append(record["iteration"] + 1)
                series[key][1].append(record[key])
    missing = [key for key, (iterations, _) in series.items() if not iterations]
    if missing:
        raise KeyError(f"{json_file} has no values for {missing}")
    return series


def default_panels(json_file: str) -> List[List[str]]:
    """The picture `plot_curves` draws without keys: every loss term in one panel
    (total_loss first), the learning rate, then one panel per other metric (evaluation
    metrics such as Acc@1 or PPL); timing scalars are left out."""
    names: Dict[str, None] = {}
    for record in _records(json_file):
        names.update(dict.fromkeys(key for key in record if key != "iteration"))
    losses = sorted((n for n in names if "loss" in n), key=lambda n: (n != "total_loss", n))
    panels = [losses] if losses else []
    if "lr" in names:
        panels.append(["lr"])
    panels += [[n] for n in names if "loss" not in n and n != "lr" and n not in _TIMING_KEYS]
    return panels


def plot_curves(
    json_file: str,
    png_file: str,
    panels: Optional[Sequence[Sequence[str]]] = None,
    title: Optional[str] = None,
) -> str:
    """Draw `panels` (lists of keys sharing a panel; default: `default_panels`) against the
    iteration into `png_file`, written atomically, and return its path. Keys logged only
    at some iterations (evaluations) are drawn with markers."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    panels = [list(p) for p in (panels if panels is not None else default_panels(json_file))]
    if not panels:
        raise KeyError(f"{json_file} has no metrics to draw")
    series = read_series(json_file, [key for panel in panels for key in panel])
    figure = Figure(figsize=(4.5 * len(panels), 3.4))
    FigureCanvasAgg(figure)
    for index, panel in enumerate(panels):
        axes = figure.add_subplot(1, len(panels), index + 1)
        for key in panel:
            iterations, values = series[key]
            axes.plot(iterations, values, label=key, marker="o" if len(iterations) < 30 else None, markersize=3)
        axes.set_xlabel("iteration")
        axes.set_ylabel(panel[0] if len(panel) == 1 else "loss")
        if len(panel) > 1:
            axes.legend(fontsize="small")
        axes.grid(alpha=0.3)
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    # Written beside and renamed: a reader (or a kill) never meets half a PNG.
    tmp = f"{png_file}.tmp-{os.getpid()}.png"
    figure.savefig(tmp, dpi=100)
    os.replace(tmp, png_file)
    return png_file
