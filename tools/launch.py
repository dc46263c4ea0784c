#!/usr/bin/env python
"""torchrun, minus its own traceback when a worker fails.

The worker has already said what went wrong (one `error:` line for user errors, a
traceback for bugs); this exits with the worker's status instead of adding torchrun's
ChildFailedError report on top.
"""
import logging
import sys

from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
from torch.distributed.run import get_args_parser, run


def main(argv: list) -> int:
    logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)
    try:
        run(get_args_parser().parse_args(argv))
    except ChildFailedError as err:
        exitcodes = [f.exitcode for f in err.failures.values() if f.exitcode]
        return exitcodes[0] if exitcodes and exitcodes[0] > 0 else 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
