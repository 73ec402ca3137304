"""SpikingJelly 2.0's own operation counter as a second independent oracle for snnkit's synaptic-op counts
(NeuroBench is the first: tests/test_energy.py).

A SpikingJelly network (Conv2d -> LIF -> Flatten -> Linear -> LIF) is run by SpikingJelly under
``op_counter.DispatchCounterMode([SynOpCounter()])``, exported with SpikingJelly's own
``nir_exchange.export_to_nir`` and deployed by snnkit's torch target on the same spike input.

Counting rule, the same on both sides: one synaptic operation per (input spike, synapse it reaches), i.e. per
spike, the weights that connect it to an output position (convolution borders, stride and padding included).
SpikingJelly counts it at the aten level (``addmm``: active inputs x output features; ``convolution``: per output
position, active inputs in its receptive field x output channels); snnkit from each layer's recorded activity
times its fan-out (``snnkit.energy.counting``). SpikingJelly counts zero weights too and snnkit does not, so the
network has no zero weight (asserted). Both count only binary (spike) inputs as synaptic operations; the input
here is spikes.

Equality needs the same spikes on both sides: weights and biases are multiples of 1/16 and LIF's decay is 1/2
(tau = 2 steps), so every membrane value is exact in float32 on both sides, and the threshold 1 + 2**-20 lies
off the grid of reachable values (SpikingJelly fires at v >= threshold, NIR at v > threshold: a tie would differ).
The spike trains are asserted equal before the counts are compared.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import quiet

pytest.importorskip("spikingjelly", reason="SpikingJelly is not importable (make env installs spikingjelly==2.0.0): "
                                           "no second oracle for the synaptic-op counts")

B, T = 4, 8
THRESHOLD = 1.0 + 2.0 ** -20


def _network() -> torch.nn.Sequential:
    """Conv2d(1->4, 3x3, stride 2, padding 1) -> LIF -> Flatten -> Linear(64->10) -> LIF, multi-step, with
    non-zero weights and biases on a 1/16 grid."""
    from spikingjelly.activation_based import layer, neuron

    torch.manual_seed(0)
    m = torch.nn.Sequential(layer.Conv2d(1, 4, 3, stride=2, padding=1), neuron.LIFNode(tau=2.0, v_threshold=THRESHOLD),
                            layer.Flatten(), layer.Linear(64, 10), neuron.LIFNode(tau=2.0, v_threshold=THRESHOLD))
    with torch.no_grad():
        for p, gain in zip(m.parameters(), (3.0, 3.0, 6.0, 6.0)):
            q = torch.round(p * gain * 16) / 16
            q[q == 0] = 1 / 16
            p.copy_(q)
    return m.eval()


def _spikingjelly_run(m: torch.nn.Sequential, x: np.ndarray) -> tuple[dict[str, int], dict[str, np.ndarray]]:
    """SynOps per weighted module (by module name) counted by SpikingJelly's SynOpCounter, and each LIF's spikes
    ``[B, T, n]``, for input spikes ``x [B, T, 1, 8, 8]``."""
    from spikingjelly.activation_based import functional, neuron
    from spikingjelly.activation_based.op_counter import DispatchCounterMode, SynOpCounter

    spikes: dict[str, torch.Tensor] = {}
    hooks = [mod.register_forward_hook(lambda _m, _i, out, n=n: spikes.__setitem__(n, out.detach().clone()))
             for n, mod in m.named_children() if isinstance(mod, neuron.LIFNode)]
    counter = SynOpCounter()
    functional.reset_net(m)
    functional.set_step_mode(m, "m")
    try:
        with torch.no_grad(), DispatchCounterMode([counter]):
            m(torch.from_numpy(x).transpose(0, 1).contiguous())  # SpikingJelly's multi-step layout [T, B, ...]
    finally:
        for h in hooks:
            h.remove()
        functional.reset_net(m)
        functional.set_step_mode(m, "s")
    per_module = {scope.split(".", 1)[1]: int(sum(ops.values())) for scope, ops in counter.records.items()
                  if scope.startswith("Sequential.")}
    assert sum(per_module.values()) == counter.get_total()
    return per_module, {n: s.transpose(0, 1).reshape(B, T, -1).numpy() for n, s in spikes.items()}


def test_synops_equal_spikingjelly_op_counter():
    from spikingjelly.activation_based.nir_exchange import export_to_nir

    from snnkit.deploy.base import get_target

    m = _network()
    assert all(bool((p != 0).all()) for p in m.parameters()), "the counting rules agree only without zero weights"
    x = (np.random.default_rng(0).random((B, T, 1, 8, 8)) < 0.4).astype(np.float32)
    sj_ops, sj_spikes = _spikingjelly_run(m, x)
    with quiet():
        graph = export_to_nir(m, torch.zeros(1, 1, 8, 8))
        result = get_target("torch", device="cpu").run(graph, x, record=True)

    # nirtorch names the node of module "3" "_3": the same events on both sides first
    for name, s in sj_spikes.items():
        assert s.sum() > 0, f"layer {name} must spike for the comparison to mean anything"
        np.testing.assert_array_equal(np.asarray(result.records[f"_{name}"]).reshape(B, T, -1), s)
    ours = {layer.name: layer for layer in result.layers}
    assert set(sj_ops) == {"0", "3"} and all(v > 0 for v in sj_ops.values())
    assert {name: ours[f"_{name}"].synops for name in sj_ops} == sj_ops
    assert all(ours[f"_{name}"].macs == 0 for name in sj_ops)  # spike inputs: no multiply-accumulates
    assert result.totals()["synops"] == sum(sj_ops.values())
