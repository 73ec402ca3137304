"""snn-report and snnkit.report: end-to-end reports on the available targets, numbers checked against the
model itself, unavailable/failing targets kept with their reason, robustness from attack results, the
metrics and comparison helpers, and one-line errors for bad input."""
from __future__ import annotations

import json
import math

import nir
import numpy as np
import pytest
import torch

from snnkit.cli.report import main
from snnkit.data import load
from snnkit.energy import builtin_models
from snnkit.models import build, save
from snnkit.report import collect as collect_mod
from snnkit.report.compare import agreement
from snnkit.report.metrics import static_metrics
from conftest import NO_LAVA_REASON, lava_available

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    """A small untrained MLP on digits with weights scaled up so that every layer spikes."""
    torch.manual_seed(0)
    model = build({"arch": "mlp", "input_shape": [1, 8, 8], "num_classes": 10, "hidden": [32], "timesteps": 6})
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.Linear):
                m.weight.mul_(4.0)
                m.weight[:, :3] = 0.0  # some pruned synapses
    path = tmp_path_factory.mktemp("model") / "model.pt"
    save(model, path)
    return path


def _report(tmp_path, model_file, *extra):
    out = tmp_path / "out"
    rc = main([str(model_file), "-o", str(out), "--json", "--no-progress", *extra])
    return rc, out


def _one(rep: dict) -> dict:
    """The only model of a one-model report."""
    (model,) = rep["models"]
    return model


@pytest.fixture(scope="module")
def digits_report(model_file, tmp_path_factory):
    out = tmp_path_factory.mktemp("rep") / "out"
    rc = main([str(model_file), "--dataset", "digits", "--limit", "24", "--targets", "torch,snntorch,norse,loihi-emu",
               "--device", "cpu", "-o", str(out), "--no-progress", "--json"])
    assert rc == 0
    return out, json.loads((out / "report.json").read_text())


def test_report_numbers_match_the_model_itself(digits_report, model_file):
    out, full = digits_report
    rep = _one(full)
    import snnkit

    model = snnkit.load(model_file)
    x, y = load("digits", "test", limit=24)
    with torch.no_grad():
        run = model.run(x)
    preds = run.outputs.sum(1).argmax(1)
    torch_entry = next(t for t in rep["targets"] if t["name"] == "torch")
    assert torch_entry["status"] == "ok" and torch_entry["reference"]
    assert torch_entry["accuracy"] == pytest.approx(float((preds == y).float().mean()))
    spikes = {name: int(s.sum()) for name, s in run.spikes.items()}
    assert torch_entry["counts"]["spikes"] == sum(spikes.values()) > 0
    by_layer = {layer["name"]: layer for layer in torch_entry["layers"]}
    assert {n: by_layer[n]["spikes"] for n in spikes} == spikes
    assert torch_entry["agreement"]["predictions"] == 1.0 and torch_entry["agreement"]["identical_samples"] == 1.0
    assert torch_entry["samples_per_s"] > 0 and torch_entry["wall_s"] > 0
    # energy arithmetic from the report's own counts (Horowitz fp32: AC 0.9, MAC 4.6, neuron update 4.6 pJ)
    c, n = torch_entry["counts"], torch_entry["n_samples"]
    e = torch_entry["energy"]["horowitz45-fp32"]
    assert e["per_sample_j"] == pytest.approx((c["synops"] * 0.9 + c["macs"] * 4.6 + c["neuron_updates"] * 4.6) * 1e-12 / n)
    assert torch_entry["energy"]["loihi2"] == {"available": False, "reason": builtin_models()["loihi2"].reason}
    # metrics: activation sparsity from the counts, connection sparsity from the pruned columns
    m = torch_entry["metrics"]
    assert m["activation_sparsity"] == pytest.approx(1 - c["spikes"] / c["neuron_updates"])
    st = rep["graph"]["static"]
    assert st["zero_weights"] >= 3 * 32 + 3 * 10 and 0 < st["connection_sparsity"] < 1


def test_every_requested_target_is_in_the_report(digits_report):
    out, full = digits_report
    rep = _one(full)
    names = [t["name"] for t in rep["targets"]]
    assert names == ["torch", "snntorch", "norse", "loihi-emu"]
    for t in rep["targets"]:
        assert t["status"] in ("ok", "unavailable", "error")
        if t["status"] != "ok":
            assert t["reason"]
    ok = {t["name"]: t for t in rep["targets"] if t["status"] == "ok"}
    # the float targets implement the same semantics: same predictions as the reference on this model
    assert ok["snntorch"]["agreement"]["predictions"] == 1.0
    assert ok["torch"]["info"]["device"] == "cpu"  # --device reached the targets that take one
    # Loihi runs T + delay steps and is compared on the reference axis
    assert ok["loihi-emu"]["delay"] > 0 and ok["loihi-emu"]["agreement"]["steps_compared"] == rep["data"]["steps"]


def test_report_files_plots_and_self_contained_html(digits_report, model_file):
    out, rep = digits_report
    label = _one(rep)["label"]
    assert label == model_file.parent.name  # the folder the model file is in
    assert set(rep["plots"]) == {"pareto"} | {f"{label}-{p}" for p in ("accuracy", "spikes_per_layer", "energy", "raster")}
    for rel in rep["plots"].values():
        assert (out / rel).read_bytes().startswith(PNG)
    md = (out / "report.md").read_text()
    html = (out / "report.html").read_text()
    for rel in rep["plots"].values():
        assert f"]({rel})" in md
    assert html.count("data:image/png;base64,") == len(rep["plots"]) and "plots/" not in html
    for name in ("torch", "snntorch", "norse", "loihi-emu", "Horowitz", "Davies", "loihi2"):
        assert name in md and name in html
    assert not list(out.glob(".*.tmp")) and not list((out / "plots").glob(".*.tmp"))


def test_unavailable_target_is_listed_with_reason(model_file, tmp_path, monkeypatch):
    monkeypatch.setenv("SNNKIT_LAVA_ENV", str(tmp_path / "no-such-env"))
    rc, out = _report(tmp_path, model_file, "--dataset", "digits", "--limit", "8", "--targets", "torch,lava",
                      "--no-raster", "--energy-model", "truenorth")
    assert rc == 0
    rep = _one(json.loads((out / "report.json").read_text()))
    lava = rep["targets"][1]
    assert lava["name"] == "lava" and lava["status"] == "unavailable" and "Lava environment" in lava["reason"]
    assert lava["reason"].replace("|", "\\|") in (out / "report.md").read_text()
    assert "unavailable: lava: SNNKIT_LAVA_ENV=" in (out / "report.html").read_text()
    assert "create one with <code>snn-lava-env" in (out / "report.html").read_text()
    assert list(json.loads((out / "report.json").read_text())["energy_models"]) == ["truenorth"]


def test_a_failing_target_does_not_take_the_report_down(model_file, monkeypatch):
    import snnkit
    from snnkit.export.exporter import to_nir

    real = collect_mod.get_target

    class Broken:
        def run(self, graph, x, record=False):
            raise RuntimeError("boom\nsecond line")

    monkeypatch.setattr(collect_mod, "get_target", lambda name, **o: Broken() if name == "norse" else real(name, **o))
    model = snnkit.load(model_file)
    graph = to_nir(model)
    inputs = collect_mod.inputs_from_dataset(graph, "digits", limit=4)
    rep = collect_mod.build_report(model, graph, inputs, ["norse"], raster=False, energy_models=["horowitz45-int8"])
    assert [t["name"] for t in rep.data["targets"]] == ["torch", "norse"]
    assert rep.data["targets"][1] == {"name": "norse", "status": "error", "reference": False,
                                      "elapsed_s": rep.data["targets"][1]["elapsed_s"], "reason": "RuntimeError: boom"}
    assert any("torch was not requested" in n for n in rep.data["notes"])


def test_a_failing_reference_is_exit_1_with_the_report_written(model_file, tmp_path, monkeypatch, capsys):
    from snnkit.deploy.torch_target import TorchTarget

    def broken(self, graph, x, **options):
        raise RuntimeError("boom")

    monkeypatch.setattr(TorchTarget, "run", broken)
    rc, out = _report(tmp_path, model_file, "--dataset", "digits", "--limit", "4", "--targets", "torch,loihi-emu",
                      "--no-raster")
    err = capsys.readouterr().err
    assert rc == 1 and "the reference target failed for " in err and " (RuntimeError: boom): the report in " in err, err
    assert _one(json.loads((out / "report.json").read_text()))["targets"][0]["status"] == "error"


def test_raw_input_matches_dataset_and_attack_results_are_plotted(model_file, tmp_path):
    import snnkit
    from snnkit.attack import FGSM, evaluate

    x, y = load("digits", "test", limit=16)
    np.save(tmp_path / "x.npy", x.numpy())
    np.save(tmp_path / "y.npy", y.numpy())
    model = snnkit.load(model_file)
    ev = evaluate(model, x, y, [FGSM(model, eps) for eps in (0.05, 0.1, 0.2)], progress=False, check_gradients=False)
    attack_file = tmp_path / "attack.json"
    attack_file.write_text(json.dumps({"target": "torch", **ev.summary()}))

    rc, out = _report(tmp_path, model_file, "--raw-input", str(tmp_path / "x.npy"), "--input-labels",
                      str(tmp_path / "y.npy"), "--targets", "torch", "--attack-json", str(attack_file), "--no-raster")
    assert rc == 0
    rep = _one(json.loads((out / "report.json").read_text()))
    (rob,) = rep["robustness"]
    assert rob["clean_accuracy"] == pytest.approx(ev.clean_accuracy)
    assert [a["robust_accuracy"] for a in rob["attacks"]] == [r.robust_accuracy for r in ev.results.values()]
    # one evaluation with several eps: one point per eps
    assert rep["robustness_curves"]["torch"] == [[0.0, pytest.approx(ev.clean_accuracy)]] + [
        [pytest.approx(r.eps), pytest.approx(r.robust_accuracy)] for r in ev.results.values()]
    assert (out / "plots" / "robustness.png").read_bytes().startswith(PNG)
    assert "FGSM" in (out / "report.md").read_text()

    rc2, out2 = _report(tmp_path / "b", model_file, "--dataset", "digits", "--limit", "16", "--targets", "torch", "--no-raster")
    rep2 = _one(json.loads((out2 / "report.json").read_text()))
    assert rep["targets"][0]["accuracy"] == rep2["targets"][0]["accuracy"]
    assert rep["targets"][0]["counts"] == rep2["targets"][0]["counts"]


def test_snn_attack_files_merge_into_one_curve_per_target(model_file, tmp_path):
    from snnkit.cli.attack import main as attack_main

    files = []
    for eps in (0.05, 0.2):
        f = tmp_path / f"attack_{eps}.json"
        assert attack_main([str(model_file), "--target", "torch", "--attack", "fgsm,pgd", "--steps", "5", "--eps",
                            str(eps), "--dataset", "digits", "--limit", "12", "--quiet", "-o", str(f)]) == 0
        files.append(json.loads(f.read_text()))
    rc, out = _report(tmp_path, model_file, "--dataset", "digits", "--limit", "12", "--targets", "torch", "--no-raster",
                      "--attack-json", str(tmp_path / "attack_0.05.json"), str(tmp_path / "attack_0.2.json"))
    assert rc == 0
    rep = _one(json.loads((out / "report.json").read_text()))
    assert len(rep["robustness"]) == 4  # reference and target, per file
    curves = rep["robustness_curves"]
    assert set(curves) == {"reference", "torch"}
    for side, key in (("reference", "reference"), ("torch", None)):
        evals = [f[key] if key else f for f in files]
        assert curves[side] == [[0.0, pytest.approx(evals[0]["clean_accuracy"])],
                                [0.05, pytest.approx(evals[0]["worst_case_accuracy"])],
                                [0.2, pytest.approx(evals[1]["worst_case_accuracy"])]]
    # the report's own clean accuracy on the torch target is the attack's clean accuracy on the same samples
    assert rep["targets"][0]["accuracy"] == pytest.approx(files[0]["clean_accuracy"])
    md = (out / "report.md").read_text()
    assert "| target | clean | eps 0.05 | eps 0.2 |" in md and "robustness.png" in md


@pytest.mark.parametrize("make_args, fragment", [
    (lambda p, m: [str(p / "missing.pt"), "--dataset", "digits"], "missing.pt: no such model file"),
    (lambda p, m: [m, "--dataset", "digits", "--targets", "torch,tpu"], "unknown target(s) tpu"),
    (lambda p, m: [m, "--dataset", "digits", "--energy-model", str(p / "bad.json")], "bad.json: not valid JSON"),
    (lambda p, m: [m, "--dataset", "digits", "--energy-model", "loihi3"], "loihi3: neither a built-in energy model"),
    (lambda p, m: [m, "--dataset", "digits", "--attack-json", str(p / "bad.json")], "bad.json: not valid JSON"),
    (lambda p, m: [m, "--dataset", "digits", "--attack-json", str(p / "other.json")], "other.json: not an snn-attack"),
    (lambda p, m: [m, "--raw-input", str(p / "big.npy")], "big.npy: raw inputs must lie in [0, 1]"),
    (lambda p, m: [m, "--input", str(p / "ok.npy"), "--input-labels", str(p / "y3.npy")], "y3.npy: labels must hold one integer per sample (1 samples)"),
    (lambda p, m: [m, "--input", str(p / "odd.npy")], "odd.npy: shape [2, 3, 1, 7, 7] does not end with"),
    (lambda p, m: [m, "--raw-input", str(p / "ok.npy"), "--input-labels", str(p / "y3.npy")], "y3.npy: labels must hold one integer per sample (4 samples)"),
    (lambda p, m: [m, "--dataset", "wine"], "data set wine has samples of shape"),
    (lambda p, m: [m, "--dataset", "digits", "--threads", "0"], "--threads must be >= 1, not 0"),
])
def test_bad_input_is_one_line_with_exit_2(model_file, tmp_path, capsys, make_args, fragment):
    (tmp_path / "bad.json").write_text("{oops")
    (tmp_path / "other.json").write_text(json.dumps({"accuracy": 1}))
    np.save(tmp_path / "big.npy", np.full((4, 1, 8, 8), 3.0, np.float32))
    np.save(tmp_path / "ok.npy", np.zeros((4, 1, 8, 8), np.float32))
    np.save(tmp_path / "y3.npy", np.zeros(3, np.int64))
    np.save(tmp_path / "odd.npy", np.zeros((2, 3, 1, 7, 7), np.float32))
    rc = main(make_args(tmp_path, str(model_file)) + ["-o", str(tmp_path / "out"), "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.startswith("snn-report: error: ") and "\n" not in err and fragment in err, err
    assert not (tmp_path / "out" / "report.json").exists()


# ---------------------------------------------------------------------------------------- the helpers


def test_agreement_on_hand_made_outputs():
    ref = np.zeros((2, 3, 2))
    ref[0, :, 0] = 1  # sample 0 -> class 0
    ref[1, :, 1] = 1  # sample 1 -> class 1
    out = ref.copy()
    out[1, 0, 1] = 0
    out[1, :, 0] = 1  # sample 1: 3 spikes on class 0, 2 on class 1 -> class 0
    a = agreement(np.concatenate([out, np.zeros((2, 2, 2))], axis=1), ref)  # extra (delayed) steps are ignored
    assert a.steps_compared == 3 and a.predictions == 0.5 and a.identical_samples == 0.5
    assert a.output_spikes == pytest.approx(1 - 4 / 12) and a.count_mae == pytest.approx((1 + 3) / 4)


def test_static_metrics_count_dense_ops_and_sparsity():
    import torch.nn.functional as F

    rng = np.random.default_rng(0)
    w = rng.normal(size=(4, 2, 3, 3)).astype(np.float32)
    w[0] = 0.0
    a = rng.normal(size=(5, 4 * 3 * 3)).astype(np.float32)
    nodes = {"input": nir.Input(input_type={"input": np.array([2, 6, 6])}),
             "conv": nir.Conv2d(input_shape=(6, 6), weight=w, stride=2, padding=1, dilation=1, groups=1,
                                bias=np.zeros(4, np.float32)),
             "flat": nir.Flatten(input_type={"input": np.array([4, 3, 3])}, start_dim=0),
             "fc": nir.Affine(weight=a, bias=np.zeros(5, np.float32)),
             "output": nir.Output(output_type={"output": np.array([5])})}
    graph = nir.NIRGraph(nodes=nodes, edges=[("input", "conv"), ("conv", "flat"), ("flat", "fc"), ("fc", "output")])
    st = static_metrics(graph)
    conv_dense = float(F.conv2d(torch.ones(1, 2, 6, 6), torch.ones(4, 2, 3, 3), stride=2, padding=1).sum())
    assert st.dense_ops_per_step == conv_dense + a.size
    assert st.weights == w.size + a.size and st.zero_weights == 18
    assert st.connection_sparsity == pytest.approx(18 / (w.size + a.size))
    assert st.synaptic_parameters == w.size + 4 + a.size + 5 == st.parameters
    assert st.footprint_bytes == 4 * st.parameters


@pytest.mark.lava
@pytest.mark.skipif(not lava_available(), reason=NO_LAVA_REASON)
def test_lava_target_in_the_report(model_file, tmp_path):
    rc, out = _report(tmp_path, model_file, "--dataset", "digits", "--limit", "8", "--targets", "lava,loihi-emu",
                      "--no-raster", "--energy-model", "loihi1-davies2018")
    assert rc == 0
    rep = _one(json.loads((out / "report.json").read_text()))
    lava, emu = rep["targets"][1], rep["targets"][2]
    assert lava["status"] == "ok" and emu["status"] == "ok"
    assert lava["counts"] == emu["counts"]  # the emulator is bit-exact with Lava
    assert math.isclose(lava["energy"]["loihi1-davies2018"]["per_sample_j"], emu["energy"]["loihi1-davies2018"]["per_sample_j"])


def test_target_warnings_reach_the_report(tmp_path):
    """What a target says in ``info["warnings"]`` (here: Norse's IAF has no reset by subtraction) is in the
    report, next to the numbers it qualifies."""
    pytest.importorskip("norse", reason="the norse target needs Norse")
    torch.manual_seed(0)
    model = build({"arch": "mlp", "input_shape": [1, 8, 8], "num_classes": 10, "hidden": [16], "timesteps": 4,
                   "neuron": "if", "reset": "subtract"})
    save(model, tmp_path / "if.pt")
    rc, out = _report(tmp_path, tmp_path / "if.pt", "--dataset", "digits", "--limit", "8", "--targets", "torch,norse",
                      "--no-raster", "--energy-model", "truenorth")
    assert rc == 0
    rep = _one(json.loads((out / "report.json").read_text()))
    norse = next(t for t in rep["targets"] if t["name"] == "norse")
    assert any("IAF" in w for w in norse["info"]["warnings"])
    for page in ("report.md", "report.html"):
        assert "norse: warning:" in (out / page).read_text() and "IAF" in (out / page).read_text()
