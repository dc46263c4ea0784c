"""The error type of data a run cannot use."""

__all__ = ["DataError"]


class DataError(ValueError):
    """Data or a data-loader setting that a run cannot use: a data file that is truncated
    or corrupt, a dataset that is empty or smaller than one batch, a split or loader
    argument that cannot work. The message names the file or setting and the fix.

    A `ValueError`, as these errors were before they had their own type. (A data file
    that does not exist is a `FileNotFoundError`.)
    """
