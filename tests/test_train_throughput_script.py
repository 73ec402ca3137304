"""benchmarks/train_throughput.py runs end to end (smoke mode) and writes its JSON record."""
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_quick_run_writes_rows_and_targets(tmp_path):
    out = tmp_path / "tt.json"
    res = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "train_throughput.py"), "--quick", "--models",
                          "mlp", "--frameworks", "snnkit,snntorch", "--out", str(out)],
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    report = json.loads(out.read_text())
    rows = {(r["framework"], r["setting"]): r for r in report["results"]}
    assert set(rows) == {("snnkit", "eager"), ("snnkit", "eager-torch-scan"), ("snntorch", "eager")}
    for r in rows.values():
        assert r["samples_per_s"] > 0 and r["threads"] >= 1
        # the same nominal work for every framework, whatever a framework skips
        assert r["train_gflop_per_sample"] == rows[("snntorch", "eager")]["train_gflop_per_sample"]
    assert set(report["targets"]["mlp"]) == {"eager_ge_2x_snntorch"}
    assert "| snnkit | eager |" in res.stdout


def test_unknown_framework_is_one_line_error(tmp_path):
    res = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "train_throughput.py"), "--quick",
                          "--frameworks", "nope", "--out", str(tmp_path / "x.json")], capture_output=True, text=True)
    assert res.returncode == 2 and "unknown framework 'nope'" in res.stderr
    assert not (tmp_path / "x.json").exists()


def test_compile_fixed_cost_is_measured_and_reported(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import train_throughput as tt

    # aot_eager: Dynamo and AOT autograd without Inductor's C++ code generation, which fails under the portable
    # run's ATEN_CPU_CAPABILITY=default (the benchmark itself uses the default backend)
    cost = tt.compile_fixed_cost(1, rounds=2, steps=3, backend="aot_eager")
    assert cost["eager_us"] > 0 and cost["compile_us"] > 0
    assert cost["added_us"] == cost["compile_us"] - cost["eager_us"] and cost["threads"] == 1
    run = {"compile_fixed_cost": cost,
           "results": [{"framework": "snnkit", "setting": "eager", "model": "mlp", "samples_per_s": 64e3}]}
    text = tt._compile_cost_lines(run, batch=64)[0]
    assert f"{cost['added_us']:+,.0f} us" in text and "mlp 1,000 us" in text
    assert tt._compile_cost_lines({"results": []}, batch=64) == []
