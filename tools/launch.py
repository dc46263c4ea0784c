#!/usr/bin/env python
"""torchrun, minus its own traceback when a worker fails.

The worker has already said what went wrong (one `error:` line for user errors, a
traceback for bugs); this exits with the status of the worker that failed first (the
cause; the others fail because it went away) instead of adding torchrun's
ChildFailedError report on top.

On SIGTERM or SIGUSR1 (a preempted job) torchrun passes the signal to the workers, which
save a checkpoint and stop (`PreemptionCheckpointer`); this then exits with 128 + the
signal number, without torchrun's SignalException traceback.
"""
import logging
import sys

from torch.distributed.elastic.multiprocessing import SignalException
from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
from torch.distributed.run import get_args_parser, run


def main(argv: list) -> int:
    logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)
    try:
        run(get_args_parser().parse_args(argv))
    except SignalException as stop:
        return 128 + int(stop.sigval)
    except ChildFailedError as err:
        failures = sorted((f for f in err.failures.values() if f.exitcode), key=lambda f: f.timestamp)
        return failures[0].exitcode if failures and failures[0].exitcode > 0 else 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
