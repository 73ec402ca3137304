"""benchmarks/deployed_robustness/run.py --quick: every column is produced for the model and its QAT fine-tuning,
the Lava re-check runs, a second run reuses the cached records, and the committed results are left alone."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "deployed_robustness" / "run.py"


def test_quick_run_writes_results_and_table(tmp_path):
    from conftest import lava_available

    committed = (ROOT / "benchmarks" / "deployed_robustness" / "results.json")
    before = committed.read_bytes() if committed.is_file() else None
    argv = [sys.executable, str(SCRIPT), "--quick", "--seeds", "0", "--only", "vanilla", "--out", str(tmp_path / "out"),
            "--work", str(tmp_path / "work")] + ([] if lava_available() else ["--no-lava"])
    res = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    rec = results["models"]["vanilla"]["per_seed"]["0"]
    top = rec["eps"]["0.1"]
    for side in ("reference", "loihi"):
        assert 0 <= top[side]["worst"] <= top[side]["clean"] <= 1
    assert {"Transfer[PGD-2]", "Square-10", "Adaptive[PGD-2]", "Ensemble[PGD-2]"} <= set(top["loihi"]["attacks"])
    assert {"PGD-3", "APGD-CE-3"} <= set(top["reference"]["attacks"])
    assert rec["per_sample"]["synops"] > 0 and rec["ann_twin_macs"] == 64 * 512 + 512 * 10
    assert rec["energy_per_sample_j"]["loihi1-davies2018"] > 0
    if lava_available():
        assert rec["lava"]["outputs_bit_exact"] and rec["lava"]["verdicts_agree"]
    qat = results["models"]["vanilla+qat"]["per_seed"]["0"]
    assert qat["eps"]["0.1"]["loihi"]["clean"] > 0 and qat["lava"] is None  # Lava re-checks the base model only
    assert (tmp_path / "work" / "vanilla-seed0-quick+qat" / "metrics.json").is_file()
    table = (tmp_path / "out" / "RESULTS.md").read_text()
    assert "| vanilla (BPTT, atan) |" in table and "| vanilla (BPTT, atan) + QAT |" in table
    assert "ANN twin energy" in table

    again = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-2000:]
    assert again.stdout.count("(reused)") == 2
    assert json.loads((tmp_path / "out" / "results.json").read_text())["config"]["reused_records"] == 2
    assert (committed.read_bytes() if committed.is_file() else None) == before
