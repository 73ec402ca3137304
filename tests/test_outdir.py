"""One writer per output folder (snnkit.outdir): a second command refuses in one line, a dead holder's lock is
gone, the same process may re-enter, and a failed command leaves no empty folder it created."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest

from snnkit.outdir import LOCK_NAME, FolderBusy, writing

pytestmark = pytest.mark.nonnumeric  # make test-portable leaves these out

HOLD = textwrap.dedent("""
    import sys, time
    from snnkit.outdir import writing
    with writing(sys.argv[1]):
        print("held", flush=True)
        time.sleep(600)
""")


@pytest.fixture
def held(tmp_path):
    """A folder another process is writing (it holds the lock until killed)."""
    folder = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    yield folder, proc
    proc.kill()
    proc.wait()


def test_a_second_writer_refuses_naming_the_folder_and_the_holder(held):
    folder, proc = held
    with pytest.raises(FolderBusy) as e:
        with writing(folder):
            pass
    assert str(e.value).startswith(f"{folder}: another snnkit command (pid {proc.pid}) is writing this folder")


@pytest.mark.parametrize("argv", [
    ["snn-train", "--dataset", "digits", "--model", "mlp", "--epochs", "1", "--out", "{out}"],
    ["snn-export", "{model}", "--target", "nir", "-o", "{out}"],
])
def test_commands_refuse_a_folder_being_written_in_one_line(held, argv, tmp_path):
    from conftest import run_cli, scaled_model_file

    folder, proc = held
    model = scaled_model_file(tmp_path / "m.pt") if "{model}" in argv else None
    res = run_cli(argv[0], *[a.format(out=folder, model=model) for a in argv[1:]])
    assert res.returncode == 2, res.stderr
    assert res.stderr.strip().count("\n") == 0
    assert f"another snnkit command (pid {proc.pid}) is writing this folder" in res.stderr
    assert sorted(p.name for p in folder.iterdir()) == [LOCK_NAME]  # nothing of the second command's


def test_the_lock_dies_with_its_holder(held):
    folder, proc = held
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    with writing(folder) as f:
        assert (f / LOCK_NAME).read_text() == str(os.getpid())
    assert not (folder / LOCK_NAME).exists()


def test_the_same_process_may_reenter(tmp_path):
    with writing(tmp_path / "a") as outer:
        with writing(tmp_path / "a" / ".." / "a") as inner:
            (inner / "x").write_text("1")
        assert (outer / LOCK_NAME).exists()
    assert (tmp_path / "a" / "x").read_text() == "1"


def test_a_failed_command_removes_only_an_empty_folder_it_created(tmp_path):
    with pytest.raises(RuntimeError):
        with writing(tmp_path / "new" / "deeper"):
            raise RuntimeError("data failed to load")
    assert not (tmp_path / "new" / "deeper").exists()
    (tmp_path / "kept").mkdir()
    with pytest.raises(RuntimeError):
        with writing(tmp_path / "kept"):
            raise RuntimeError("x")
    assert (tmp_path / "kept").is_dir()


def test_a_file_in_the_way_is_one_line(tmp_path):
    (tmp_path / "f").write_text("")
    with pytest.raises(ValueError, match=r"f: exists and is not a folder$"):
        with writing(tmp_path / "f"):
            pass
