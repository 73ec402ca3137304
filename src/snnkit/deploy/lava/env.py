"""The Python 3.10 environment that runs Lava: where it is, and how to create it (torch-free, stdlib only).

lava-nc 0.10.0 installs only on Python 3.10 with numpy < 2, so Lava runs in an environment of its own, in a
worker process (:mod:`snnkit.deploy.lava.target`). That environment is looked up, in this order:

1. ``$SNNKIT_LAVA_ENV``: a virtual environment folder or its interpreter (a relative path is taken from the
   current folder at lookup time);
2. ``.venv-lava`` in the current folder (what ``make`` creates in a checkout);
3. the per-user location ``$XDG_DATA_HOME/snnkit/lava-env`` (``~/.local/share/snnkit/lava-env``), which is
   where ``snn-lava-env`` creates it by default.

:func:`create` builds one from a Python 3.10 interpreter: ``--python``, else ``$SNNKIT_PYTHON310``, else
``python3.10`` on ``PATH``, else pyenv's 3.10.x. The environment holds only Lava and what it needs; snnkit's
own (torch-free) worker code reaches it through ``PYTHONPATH`` at run time, so the two never drift apart.

It also holds lava-dl 0.6.0, installed with ``--no-deps``: snnkit loads its exported netx files with lava-dl's
own ``netx`` to check them. lava-dl pins torch 2.3, whose Python 3.10 wheel is a CUDA build of several GB;
netx needs torch only for two names at import time, which the worker supplies with stand-ins
(``snnkit/deploy/lava/netx_imports``). The stamp file records what was installed; an environment whose stamp
is older (lava-nc alone) is upgraded in place, not left without lava-dl.
"""
from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
from pathlib import Path

ENV_VAR = "SNNKIT_LAVA_ENV"
BASE_PYTHON_VAR = "SNNKIT_PYTHON310"
CREATE_COMMAND = "snn-lava-env"
REQUIREMENTS = ("lava-nc==0.10.0", "numpy<2", "nir>=1.0.8")
NO_DEPS = ("lava-dl==0.6.0",)  # its torch/torchvision pins are not installed (see the module docstring)
STAMP = ".snnkit-lava-complete"  # written last, holding STAMP_TEXT: otherwise incomplete or outdated
STAMP_TEXT = " ".join(REQUIREMENTS) + " | --no-deps " + " ".join(NO_DEPS) + "\n"
CHECK = ("import importlib.util, lava.magma, nir, numpy; "
         "assert importlib.util.find_spec('lava.lib.dl.netx'), 'lava-dl netx is missing'")
NETX_CHECK = "import importlib.util, sys; sys.exit(importlib.util.find_spec('lava.lib.dl.netx') is None)"


class LavaEnvError(Exception):
    """No usable Lava environment, or it could not be created: one line for the user."""


class NoPython310(LavaEnvError):
    """No Python 3.10 interpreter to build the environment from."""


def user_location() -> Path:
    """The per-user default: ``$XDG_DATA_HOME/snnkit/lava-env`` (``~/.local/share/snnkit/lava-env``)."""
    data = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(data) / "snnkit" / "lava-env"


def interpreter(location: Path) -> Path:
    """The interpreter of an environment folder, or ``location`` itself when it is a file."""
    return location / "bin" / "python" if location.is_dir() else location


def _usable(python: Path) -> bool:
    return python.is_file() and os.access(python, os.X_OK)


def find_python() -> Path:
    """The Lava environment's interpreter (absolute), or a :class:`LavaEnvError` saying how to get one."""
    env = os.environ.get(ENV_VAR)
    if env:
        python = interpreter(Path(env).expanduser().absolute())
        if _usable(python):
            return python
        raise LavaEnvError(f"{ENV_VAR}={env} is not a Lava environment (no Python interpreter there); "
                           f"create one with `{CREATE_COMMAND} {env}`")
    for location in (Path.cwd() / ".venv-lava", user_location()):
        python = interpreter(location)
        if _usable(python):
            return python
    raise LavaEnvError(f"no Lava environment; create one with `{CREATE_COMMAND}` (or set {ENV_VAR}=DIR)")


def _is_python310(python: str) -> bool:
    try:
        out = subprocess.run([python, "-c", "import sys; print(sys.version_info[:2] == (3, 10))"],
                             capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return False
    return out.stdout.strip() == "True"


def find_base_python(explicit: str | None = None) -> str:
    """A Python 3.10 interpreter to build the environment from, or a :class:`LavaEnvError`."""
    chosen = explicit or os.environ.get(BASE_PYTHON_VAR)
    if chosen:
        if _is_python310(chosen):
            return chosen
        name = "--python" if explicit else BASE_PYTHON_VAR
        raise NoPython310(f"{name}={chosen} is not a Python 3.10 interpreter (Lava needs Python 3.10)")
    candidates = [shutil.which("python3.10")]
    pyenv = shutil.which("pyenv")
    if pyenv:
        root = subprocess.run([pyenv, "root"], capture_output=True, text=True).stdout.strip()
        candidates += sorted(glob.glob(os.path.join(root, "versions", "3.10*", "bin", "python3.10")), reverse=True)
    for c in candidates:
        if c and _is_python310(c):
            return c
    raise NoPython310(f"no Python 3.10 found (Lava needs it); install one, or name it with --python or "
                       f"{BASE_PYTHON_VAR}=/path/to/python3.10")


def is_complete(location: Path) -> bool:
    """Whether ``location`` holds an environment made with this version's requirements."""
    stamp = location / STAMP
    return stamp.is_file() and stamp.read_text() == STAMP_TEXT


def is_outdated(location: Path) -> bool:
    """Whether ``location`` holds a complete environment of an earlier snnkit (to be upgraded in place)."""
    return (location / STAMP).is_file() and not is_complete(location)


def has_netx(python: Path) -> bool:
    """Whether lava-dl's netx is installed for the Lava interpreter ``python`` (without importing it)."""
    try:
        return subprocess.run([str(python), "-c", NETX_CHECK], capture_output=True, timeout=60).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def _install_steps(python: str) -> list[list[str]]:
    pip = [python, "-m", "pip", "install", "--disable-pip-version-check"]
    return [[*pip, *REQUIREMENTS], [*pip, "--no-deps", *NO_DEPS], [python, "-c", CHECK]]


def _run_steps(steps: list[list[str]], what: str, log) -> None:
    for cmd in steps:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for line in proc.stdout:
            log.write(line)
        if proc.wait() != 0:
            raise LavaEnvError(f"{what} the Lava environment failed at `{' '.join(cmd[1:4])}` "
                               f"(exit code {proc.returncode}); its output is above")


def create(location: Path, base_python: str | None = None, *, log=None) -> Path:
    """Create the Lava environment at ``location`` (a no-op when it is already complete); its interpreter.

    An environment completed by an earlier snnkit (an older stamp) is upgraded in place: the requirements are
    installed again (pip leaves what is satisfied) and lava-dl added. An incomplete folder left by an
    interrupted run is replaced. pip's output goes to ``log``.
    """
    log = log or sys.stderr
    location = location.expanduser().absolute()
    if is_complete(location):
        return interpreter(location)
    python = interpreter(location)
    if is_outdated(location) and _usable(python):
        print(f"snnkit: upgrading the Lava environment in {location} (adds {' '.join(NO_DEPS)} for netx)",
              file=log, flush=True)
        _run_steps(_install_steps(str(python)), "upgrading", log)
        (location / STAMP).write_text(STAMP_TEXT)
        return python
    base = find_base_python(base_python)
    if location.exists():
        if not (location / "pyvenv.cfg").is_file():
            raise LavaEnvError(f"{location} exists and is not a virtual environment; choose another folder")
        shutil.rmtree(location)
    location.parent.mkdir(parents=True, exist_ok=True)
    print(f"snnkit: creating the Lava environment in {location} from {base}", file=log, flush=True)
    _run_steps([[base, "-m", "venv", str(location)], *_install_steps(str(location / "bin" / "python"))],
               "creating", log)
    (location / STAMP).write_text(STAMP_TEXT)
    return interpreter(location)
