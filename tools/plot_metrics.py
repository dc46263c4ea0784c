#!/usr/bin/env python
"""Plot training curves from a run's `metrics.json` into a PNG.

    python tools/plot_metrics.py output/gpt2_shakespeare --keys total_loss PPL --out curve.png

Each key gets its own panel against the iteration; keys logged only at evaluations (PPL,
Acc@1) are drawn as points. Needs matplotlib (`pip install matplotlib`), which training
itself does not.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Optional


def read_series(output_dir: str, keys: list[str]) -> dict[str, tuple[list[int], list[float]]]:
    """{key: (iterations, values)} for each key found in `output_dir/metrics.json`."""
    path = os.path.join(output_dir, "metrics.json")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} does not exist: pass a training run's output_dir")
    series: dict[str, tuple[list[int], list[float]]] = {k: ([], []) for k in keys}
    with open(path) as f:
        for line in f:
            record = json.loads(line) if line.strip() else {}
            for key in keys:
                if key in record:
                    series[key][0].append(record["iteration"] + 1)
                    series[key][1].append(record[key])
    missing = [k for k, (its, _) in series.items() if not its]
    if missing:
        raise KeyError(f"{path} has no values for {missing}")
    return series


def plot(series: dict[str, tuple[list[int], list[float]]], out: str, title: str) -> None:
    """One panel per key, side by side, saved to `out`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(series), figsize=(5 * len(series), 3.5), squeeze=False)
    for ax, (key, (its, values)) in zip(axes[0], series.items()):
        ax.plot(its, values, marker="o" if len(its) < 30 else None)
        ax.set_xlabel("iteration")
        ax.set_ylabel(key)
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(out, dpi=100)


def main(argv: Optional[list[str]] = None) -> int:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("output_dir", help="a training run's train.output_dir")
    parser.add_argument("--keys", nargs="+", default=["total_loss"], help="metrics to plot")
    parser.add_argument("--out", default=None, help="PNG path (default: OUTPUT_DIR/curve.png)")
    parser.add_argument("--title", default=None)
    args = parser.parse_args(argv)
    try:
        series = read_series(args.output_dir, args.keys)
        out = args.out or os.path.join(args.output_dir, "curve.png")
        plot(series, out, args.title or os.path.basename(os.path.normpath(args.output_dir)))
    except (FileNotFoundError, KeyError) as err:
        print(f"plot_metrics.py: error: {err.args[0]}", file=sys.stderr)
        return 1
    except ImportError:
        print("plot_metrics.py: error: matplotlib is not installed: pip install matplotlib", file=sys.stderr)
        return 1
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
