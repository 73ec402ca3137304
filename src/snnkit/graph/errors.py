"""The one error type for a graph, an input or an environment a command cannot use."""
from __future__ import annotations


class DeployError(Exception):
    """A problem with the user's graph, input or environment: reported as one line, exit code 2."""
