"""The one error type for a graph, an input or an environment a command cannot use."""
from __future__ import annotations


class DeployError(Exception):
    """A problem with the user's graph, input or environment: reported as one line, exit code 2."""


def first_line(exc: BaseException) -> str:
    """The first line of ``exc``'s message, or its type's name when it has none: for one-line reports."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
