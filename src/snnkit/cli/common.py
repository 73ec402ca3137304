"""What every snnkit command shares: one-line errors with exit code 2, JSON output, quiet progress."""
from __future__ import annotations

import argparse
import json
import sys
from typing import Callable

from snnkit.graph.errors import first_line

EXIT_USAGE = 2


def user_errors() -> tuple[type[BaseException], ...]:
    """Exception types that mean "bad input": reported in one line, no traceback."""
    from snnkit.atomic import OutputNotWritten
    from snnkit.data import DataError
    from snnkit.graph import DeployError
    from snnkit.deploy.lava.env import LavaEnvError
    from snnkit.models.io import ModelFileError

    return (DataError, DeployError, LavaEnvError, ModelFileError, OutputNotWritten, ValueError, FileNotFoundError,
            FileExistsError, IsADirectoryError, NotADirectoryError, PermissionError)


def run(prog: str, main: Callable[[argparse.Namespace], int | None], parser: argparse.ArgumentParser,
        argv: list[str] | None = None) -> int:
    """Parse ``argv``, call ``main(args)`` and turn user errors into ``prog: message`` + exit code 2."""
    args = parser.parse_args(argv)
    try:
        return int(main(args) or 0)
    except user_errors() as exc:
        message = first_line(exc)
        print(f"{prog}: error: {message}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130


def either(names: list[str]) -> str:
    """``"a, b or c"``: alternatives for a one-line message."""
    return " or ".join([", ".join(names[:-1]), names[-1]] if len(names) > 1 else names)


def check_data_dir(data_dir: str | None, dataset: str | None, needs: str = "--dataset") -> None:
    """Refuse ``--data-dir`` where it would be ignored: without a data set, or with one that ships with snnkit.

    needs: what names the data set in the message (``--dataset``, or ``a model trained on`` where the model file
    says which)."""
    from snnkit.data import DATASETS, info

    if data_dir is None or (dataset is not None and info(dataset).needs_data_dir):
        return
    shipped = f" ({dataset} ships with snnkit)" if dataset else ""
    raise ValueError(f"--data-dir needs {needs} {either([n for n in DATASETS if info(n).needs_data_dir])}{shipped}")


def emit(payload: dict, as_json: bool, human: Callable[[dict], str]) -> None:
    """Print ``payload`` as JSON (``--json``) or as the human-readable text ``human(payload)``."""
    if as_json:
        print(json.dumps(payload, indent=2, default=float))
    else:
        print(human(payload))


def add_json_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print the result as JSON on stdout (progress goes to stderr)")


def add_threads_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's choice; 1 is often "
                        "fastest for small networks and on a machine shared with other jobs)")


def apply_threads(threads: int | None) -> None:
    """Set torch's intra-op threads from ``--threads`` (None: torch's choice); below 1 is a user error."""
    if threads is None:
        return
    if threads < 1:
        raise ValueError(f"--threads must be >= 1, not {threads}")
    import torch

    torch.set_num_threads(threads)


def sample_session(args: argparse.Namespace, command: str):
    """The ``torchrun`` session of a command that shares its samples out over processes (``snn-attack``,
    ``snn-deploy``): joined with ``--distributed`` (``args.distributed``; gloo gathers the results whatever
    ``args.device``), nothing otherwise (:func:`snnkit.distributed.session`)."""
    from snnkit import distributed
    from snnkit.deploy.torch_target import resolve_device

    device = str(resolve_device(args.device)) if args.distributed else "cpu"  # else the command checks it later
    return distributed.session(args.distributed, device, command, objects_only=True)
