"""``snn-lava-env``: create the Python 3.10 environment in which the ``lava`` target runs Lava.

With no DIR it goes to the per-user location where every snnkit command looks for it
(``$XDG_DATA_HOME/snnkit/lava-env``); with DIR, point ``SNNKIT_LAVA_ENV`` at DIR (a ``.venv-lava`` in the
current folder is found without it). Running it again on a complete environment does nothing; an environment
made by an earlier snnkit is upgraded in place (lava-dl 0.6.0 for the netx check is added).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from snnkit.cli.common import add_json_flag, emit, run


def parser() -> argparse.ArgumentParser:
    from snnkit.deploy.lava import env

    p = argparse.ArgumentParser(prog="snn-lava-env", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dir", nargs="?", help=f"where to create it (default: {env.user_location()})")
    p.add_argument("--python", help=f"the Python 3.10 interpreter to build it from (default: ${env.BASE_PYTHON_VAR}, "
                   "python3.10 on PATH, or pyenv's 3.10.x)")
    p.add_argument("--optional", action="store_true", help="when no Python 3.10 exists, say so in one line and exit 0 "
                   "(the lava target is then unavailable, nothing else is)")
    p.add_argument("--check", action="store_true", help="create nothing: print the environment the lava target would "
                   "use, or exit 2 saying there is none")
    add_json_flag(p)
    return p


def _main(args: argparse.Namespace) -> int:
    from snnkit.deploy.lava import env

    if args.check:
        python = env.find_python()
        emit({"python": str(python), "netx": env.has_netx(python)}, args.json,
             lambda s: f"snnkit: the lava target uses {s['python']}"
                       + ("" if s["netx"] else " (without lava-dl's netx: run snn-lava-env to upgrade it)"))
        return 0
    location = Path(args.dir) if args.dir else env.user_location()
    was_complete = env.is_complete(location.expanduser().absolute())
    was_outdated = env.is_outdated(location.expanduser().absolute())
    try:
        python = env.create(location, args.python)
    except env.NoPython310 as e:
        if args.optional:
            print(f"snnkit: {e}; the lava target is unavailable", file=sys.stderr)
            return 0
        raise
    payload = {"python": str(python), "created": not was_complete and not was_outdated, "upgraded": was_outdated}
    state = "upgraded" if was_outdated else ("ready" if payload["created"] else "already complete")
    emit(payload, args.json, lambda s: f"snnkit: Lava environment {state} ({s['python']})")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run("snn-lava-env", _main, parser(), argv)


if __name__ == "__main__":
    raise SystemExit(main())
