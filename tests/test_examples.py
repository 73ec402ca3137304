"""Every script in ``examples/`` runs with ``--quick`` as a user would start it (a subprocess, its own output
folder): exit code 0, its table printed, its figures written as PNG files; bad input is one line and exit 2.

Marked ``examples`` (``make test`` runs them; ``make test-portable`` leaves them out).
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from conftest import lava_available

pytestmark = pytest.mark.examples

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
PNG = b"\x89PNG\r\n\x1a\n"

# script -> (a header line of the table it prints, the figures it writes)
EXPECTED = {
    "energy_comparison.py": ("| model | target | accuracy | robust 0.1 | work / inference |",
                             ["report/plots/pareto.png", "report/plots/vanilla-energy.png"]),
    "robustness_on_lava.py": ("| eps | attack | reference |", ["robust_accuracy_vs_eps.png"]),
    "sparse_conversion.py": ("| phase | network | clean | PGD eps 0.1 | zero weights | phase s |",
                             ["accuracy_per_phase.png"]),
    "temporal_coding.py": ("| code | clean | grad. sparsity | apparent (PGD) | worst case |",
                           ["robust_accuracy_per_attack.png", "zero_gradient_map.png"]),
    "third_party_nir.py": ("| graph | target | status | equal output spikes |",
                           ["outputs_cnn_sinabs.png", "outputs_braille_noDelay_bias_zero.png"]),
}


def _run(script: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(EXAMPLES / script), *args], capture_output=True, text=True,
                          timeout=900)


def test_every_example_is_tested():
    assert sorted(p.name for p in EXAMPLES.glob("*.py")) == sorted(EXPECTED)


@pytest.mark.parametrize("script", sorted(EXPECTED))
def test_example_runs_quick(script, tmp_path):
    res = _run(script, "--quick", "--out", str(tmp_path))
    assert res.returncode == 0, res.stderr[-3000:]
    header, figures = EXPECTED[script]
    lines = res.stdout.splitlines()
    assert header in "\n".join(lines), res.stdout
    at = next(i for i, line in enumerate(lines) if line.startswith(header))
    assert lines[at + 1].startswith("|---") and lines[at + 2].startswith("| "), "the table has no rows"
    for name in figures:
        blob = (tmp_path / name).read_bytes()
        assert blob.startswith(PNG) and len(blob) > 5000, name
    if script == "energy_comparison.py":  # the multi-model report beside its plots
        assert {"report.md", "report.html", "report.json"} <= {p.name for p in (tmp_path / "report").iterdir()}
    if script == "robustness_on_lava.py":  # Lava re-checks exactly when its environment exists
        assert ("Lava re-check: outputs = loihi-emu |  | True |" in res.stdout) == lava_available(), res.stdout


@pytest.mark.parametrize("script, args, name", [
    ("robustness_on_lava.py", ["--model", "missing/model.pt"], "missing/model.pt"),
    ("third_party_nir.py", ["--graphs", "missing.nir"], "missing.nir"),
])
def test_bad_input_is_one_line_and_exit_2(script, args, name, tmp_path):
    res = _run(script, *args, "--out", str(tmp_path))
    assert res.returncode == 2 and res.stdout == ""
    assert len(res.stderr.strip().splitlines()) == 1 and name in res.stderr, res.stderr
