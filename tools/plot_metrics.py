#!/usr/bin/env python
"""Plot training curves from a run's `metrics.json` into a PNG.

    python tools/plot_metrics.py output/gpt2_shakespeare --keys total_loss PPL --out curve.png

Each key gets its own panel against the iteration; keys logged only at evaluations (PPL,
Acc@1) are drawn as points. Without `--keys` the picture is the one training writes to
`output_dir/curves.png` (losses, learning rate, evaluation metrics).
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Optional

from libai.utils.curves import plot_curves


def main(argv: Optional[list[str]] = None) -> int:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("output_dir", help="a training run's train.output_dir")
    parser.add_argument("--keys", nargs="+", default=None, help="metrics to plot, one panel each")
    parser.add_argument("--out", default=None, help="PNG path (default: OUTPUT_DIR/curve.png)")
    parser.add_argument("--title", default=None)
    args = parser.parse_args(argv)
    out = args.out or os.path.join(args.output_dir, "curve.png")
    panels = [[key] for key in args.keys] if args.keys else None
    title = args.title or os.path.basename(os.path.normpath(args.output_dir))
    try:
        plot_curves(os.path.join(args.output_dir, "metrics.json"), out, panels, title)
    except (FileNotFoundError, KeyError) as err:
        print(f"plot_metrics.py: error: {err.args[0]}", file=sys.stderr)
        return 1
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
