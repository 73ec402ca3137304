"""snnkit -> NIR -> other libraries: every model kind snnkit trains, exported with ``snn-export --target
nir|norse|snntorch``, imported by snnTorch, Norse, SpikingJelly and nirtorch with their own importers, must
predict what snnkit predicts on the first test digits.

Which file each library reads (docs/interop.md):

- snnTorch: ``model_snntorch.nir`` (``import_from_nir``), the graph rewritten around its importer's bugs;
- Norse: ``model_norse.nir`` (``norse.torch.from_nir(graph, dt=<the file's dt>)``), likewise;
- SpikingJelly: ``model.nir`` (``import_from_nir(graph, dt=<the graph's dt>)``); its importer needs an IF's
  ``r`` to equal ``1/dt`` (its "ode" convention) while snnkit writes the per-step ``r = 1``: IF graphs are
  imported with ``dt=1.0`` (then both conventions coincide; the graph has no time constant);
- nirtorch: ``model.nir`` (``nirtorch.nir_to_torch``) with the user's neuron modules (nirtorch has none) and two
  mapping fixes: its default Affine drops the bias, its default Flatten counts the batch axis.

Reset by subtraction is not in NIR: every library resets to zero, so a ``reset: subtract`` model is compared with
snnkit's reference under ``reset="zero"`` (and shown to differ from the model itself).
"""
from __future__ import annotations

import contextlib
import importlib.util
import io
import json
from pathlib import Path

import nir
import numpy as np
import pytest
import torch

pytest.importorskip("nirtorch", reason="nirtorch is not installed: the importers need it")

from interop_nets import SPIKE_TOL, differing, run_target  # noqa: E402

from snnkit.graph import graph_metadata, read_nir  # noqa: E402

N_TEST = 64
MODELS = {
    "mlp-lif": ({"arch": "mlp", "hidden": [32], "timesteps": 6}, 6),
    "mlp-if": ({"arch": "mlp", "hidden": [32], "timesteps": 6, "neuron": "if"}, 6),
    "mlp-subtract": ({"arch": "mlp", "hidden": [32], "timesteps": 6, "reset": "subtract"}, 6),
    "mlp-poisson": ({"arch": "mlp", "hidden": [32], "timesteps": 8, "encoder": {"name": "poisson", "seed": 3}}, 6),
    "mlp-latency": ({"arch": "mlp", "hidden": [32], "timesteps": 8, "encoder": {"name": "latency"}}, 6),
    "convnet": ({"arch": "convnet", "channels": [4, 8], "fc": [16], "timesteps": 4}, 3),  # AvgPool2d, folded BN
}
EXPORTS = ("nir", "norse", "snntorch")
LIBRARIES = ("snntorch", "norse", "spikingjelly", "nirtorch")


class Trained:
    """One trained model, its exports and snnkit's answers on the first test digits."""

    def __init__(self, kind: str, out: Path):
        import snnkit
        from snnkit import data
        from snnkit.cli import export as cli_export
        from snnkit.deploy.inputs import encode
        from snnkit.train import TrainConfig, train

        cfg, epochs = MODELS[kind]
        self.kind = kind
        self.path = out / "model.pt"
        train(TrainConfig(dataset="digits", model=cfg, epochs=epochs, batch_size=64, seed=0), out, progress=False)
        self.files, self.reports = {}, {}
        for target in EXPORTS:
            if target != "nir" and importlib.util.find_spec(target) is None:
                continue  # the export checks the file on its target, which needs the library
            with contextlib.redirect_stdout(io.StringIO()) as text:
                rc = cli_export.main([str(self.path), "--target", target, "-o", str(out / f"export-{target}"),
                                      "--json", "--probe", "16"])
            assert rc == 0, f"snn-export --target {target} failed for {kind}"
            summary = json.loads(text.getvalue())
            self.files[target] = Path(summary["files"]["nir" if target == "nir" else target])
            self.reports[target] = summary
        self.graph = read_nir(self.files["nir"])
        self.meta = graph_metadata(self.graph)
        x, self.y = data.load("digits", "test", limit=N_TEST)
        self.x = encode(x.numpy(), self.meta)
        self.reference = run_target("torch", self.graph, self.x)
        with torch.no_grad():
            self.model_predictions = snnkit.load(self.path)(x).argmax(1).numpy()
        reset = {"reset": "zero"} if cfg.get("reset") == "subtract" else {}
        self.expected = run_target("torch", self.graph, self.x, **reset)  # what a reset-to-zero library computes

    def graph_of(self, export: str) -> nir.NIRGraph:
        if export not in self.files:
            pytest.skip(f"{export} is not installed: snn-export --target {export} was not run")
        return read_nir(self.files[export])


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    cache: dict[str, Trained] = {}

    def get(kind: str) -> Trained:
        if kind not in cache:
            cache[kind] = Trained(kind, tmp_path_factory.mktemp(kind))
        return cache[kind]

    return get


def _agrees(out: np.ndarray, ref, what: str) -> None:
    frac = differing(out, ref.outputs)
    preds = out.sum(axis=1).argmax(axis=1)
    same = float((preds == ref.predictions()).mean())
    assert frac <= SPIKE_TOL and same >= 1 - 10 * SPIKE_TOL, \
        f"{what}: {frac:.2%} of output spike values differ, predictions equal on {same:.1%}"


@pytest.mark.parametrize("kind", list(MODELS))
def test_snnkit_reference_is_the_model(trained, kind):
    """The torch target on ``model.nir`` predicts what ``snnkit.load(model)(x)`` predicts."""
    t = trained(kind)
    assert t.reference.total_spikes > 0
    assert np.array_equal(t.reference.predictions(), t.model_predictions)


@pytest.mark.parametrize("export", EXPORTS)
@pytest.mark.parametrize("kind", list(MODELS))
def test_every_exported_file_reproduces_the_model(trained, kind, export):
    """Each file, read with its own metadata (its ``dt`` included), gives the model's spikes on the reference.
    ``model_snntorch.nir`` holds time constants rescaled for snnTorch's fixed 1e-4 s step: its ``dt`` must say so."""
    t = trained(kind)
    g = t.graph_of(export)
    if export == "snntorch" and any(isinstance(n, (nir.LIF, nir.CubaLIF)) for n in g.nodes.values()):
        assert graph_metadata(g).get("dt") == pytest.approx(1e-4), "time constants rescaled to 1e-4 s, dt not"
    res = run_target("torch", g, t.x)
    _agrees(res.outputs, t.reference, f"{kind} {t.files[export].name} on the reference")



def _run_library(library: str, t: Trained) -> np.ndarray:
    from interop_import import (affine_with_bias, batch_agnostic_flatten, run_nirtorch, run_norse, run_snntorch,
                                run_spikingjelly)

    if library == "snntorch":
        pytest.importorskip("snntorch", reason="snnTorch is not installed")
        return run_snntorch(t.graph_of("snntorch"), t.x)
    if library == "norse":
        pytest.importorskip("norse", reason="Norse is not installed")
        g = t.graph_of("norse")
        return run_norse(g, t.x, dt=graph_metadata(g)["dt"])
    if library == "spikingjelly":
        pytest.importorskip("spikingjelly", reason="SpikingJelly is not installed")
        is_if = any(isinstance(n, nir.IF) for n in t.graph.nodes.values())
        return run_spikingjelly(t.graph, t.x, dt=1.0 if is_if else t.meta["dt"])
    return run_nirtorch(t.graph, t.x, dt=t.meta["dt"],
                        node_map={nir.Affine: affine_with_bias, nir.Flatten: batch_agnostic_flatten})


@pytest.mark.parametrize("library", LIBRARIES)
@pytest.mark.parametrize("kind", list(MODELS))
def test_library_imports_the_snnkit_model(trained, kind, library):
    t = trained(kind)
    out = _run_library(library, t)
    _agrees(out, t.expected, f"{kind} imported by {library}")


@pytest.mark.parametrize("library", LIBRARIES)
def test_reset_by_subtraction_does_not_survive_an_import(trained, library):
    """The subtract model imported anywhere resets to zero: it differs from the model (measured: 12 % of the output
    spike values and 8 % of the predictions on the 64 digits; snnkit's export report warns about it)."""
    t = trained("mlp-subtract")
    out = _run_library(library, t)
    assert differing(out, t.reference.outputs) > 0
    assert any("subtract" in w for w in t.reports["nir"]["warnings"])


@pytest.mark.parametrize("library", ["snntorch", "norse", "nirtorch"])
def test_plain_model_nir_flatten_counts_the_batch_axis(trained, library):
    """Why snnTorch and Norse read the per-library file: their importers (and nirtorch's default map) build
    ``torch.nn.Flatten(start_dim=0)`` from NIR's batch-free Flatten, which swallows the batch axis."""
    from interop_import import run_nirtorch, run_norse, run_snntorch

    pytest.importorskip(library, reason=f"{library} is not installed")
    t = trained("mlp-lif")
    with pytest.raises(RuntimeError, match="shapes cannot be multiplied"):
        if library == "snntorch":
            run_snntorch(t.graph, t.x)
        elif library == "norse":
            run_norse(t.graph, t.x, dt=t.meta["dt"])
        else:
            run_nirtorch(t.graph, t.x, dt=t.meta["dt"])


def test_nirtorch_default_affine_drops_the_bias(trained):
    """nirtorch 2.6's default Affine mapping writes the bias to ``module.weight.bias``: the layer runs without it.
    Measured on ``model_norse.nir`` (Flatten already batch-agnostic there): 5.3 % of the output spike values and
    9 % of the predictions differ; the user's Affine mapping (``interop_import.affine_with_bias``) fixes it."""
    from interop_import import affine_with_bias, run_nirtorch

    t = trained("mlp-lif")
    g = t.graph_of("norse")
    dt = graph_metadata(g)["dt"]
    assert differing(run_nirtorch(g, t.x, dt=dt), t.reference.outputs) > 0
    _agrees(run_nirtorch(g, t.x, dt=dt, node_map={nir.Affine: affine_with_bias}), t.reference, "nirtorch, fixed")


def test_spikingjelly_needs_dt_one_for_a_per_step_if(trained):
    """SpikingJelly's importer requires ``r == 1/dt`` for IF (its "ode" convention); snnkit writes ``r = 1``."""
    pytest.importorskip("spikingjelly", reason="SpikingJelly is not installed")
    from interop_import import run_spikingjelly

    t = trained("mlp-if")
    with pytest.raises(ValueError, match="r must equal 1 / dt"):
        run_spikingjelly(t.graph, t.x, dt=t.meta["dt"])


def test_snntorch_reads_model_nir_with_its_fixed_dt(trained):
    """snnTorch's importer assumes dt = 1e-4 s; snnkit's models step 1e-3 s. ``model_snntorch.nir`` has its time
    constants rescaled; read directly (Flatten made batch-agnostic so it runs), ``model.nir`` decays 10x too slowly
    (measured: 7.1 % of the output spike values differ, predictions equal on 9 % of the digits)."""
    pytest.importorskip("snntorch", reason="snnTorch is not installed")
    from interop_import import run_snntorch
    from snnkit.export.rewrite import batch_agnostic_flatten

    t = trained("mlp-lif")
    g, _ = batch_agnostic_flatten(t.graph)
    assert t.meta["dt"] == pytest.approx(1e-3)
    assert differing(run_snntorch(g, t.x), t.reference.outputs) > 0
