"""The one exception the data loaders raise for a user's bad input."""
from __future__ import annotations


class DataError(ValueError):
    """A missing or malformed data set, file or argument, reported as one line naming it.

    The message starts with ``data:`` and, where a file is at fault, names that file, e.g.
    ``data: /d/train-images-idx3-ubyte: bad magic number 1234 (expected 2051)``. CLIs catch it and exit
    with code 2 without a traceback.
    """
