"""Library networks (snnTorch, Norse, SpikingJelly exports) on the Loihi targets: ``lava`` must equal
``loihi-emu`` bit for bit (every layer's raster), and both are compared with the reference (reported, not
required: Loihi 2 quantises to 8-bit weights and 12-bit decays, docs/loihi.md).

One Lava run per network kind (dense LIF, with reset by subtraction too, dense IF, CubaLIF, recurrent, conv with
pooling); Lava tests skip only
when the Lava environment is missing. The emulator runs every library case.
"""
from __future__ import annotations

import numpy as np
import pytest

from conftest import NO_LAVA_REASON, lava_available
from interop_nets import (NORSE_KINDS, SNNTORCH_KINDS, SPIKINGJELLY_KINDS, differing, norse_case, run_target,
                          snntorch_case, spikingjelly_case)

BUILDERS = {"snntorch": (snntorch_case, "snntorch"), "norse": (norse_case, "norse"),
            "spikingjelly": (spikingjelly_case, "spikingjelly")}
ALL_CASES = ([("snntorch", k) for k in SNNTORCH_KINDS] + [("norse", k) for k in NORSE_KINDS]
             + [("spikingjelly", k) for k in SPIKINGJELLY_KINDS])
LAVA_CASES = {  # one per network kind
    "dense-lif": ("snntorch", "dense-lif"),
    "dense-lif-subtract": ("snntorch", "dense-lif-subtract"),  # reset="subtract" on Loihi
    "dense-if": ("spikingjelly", "dense-if"),
    "cubalif": ("snntorch", "cubalif"),
    "recurrent": ("snntorch", "recurrent"),
    "conv-pool": ("spikingjelly", "conv-pool"),
}


def _case(library: str, kind: str):
    pytest.importorskip(BUILDERS[library][1], reason=f"{library} is not installed")
    return BUILDERS[library][0](kind)


def _agreement(case, res) -> dict:
    """How a Loihi result compares with the reference on the reference's time axis."""
    t = case.x.shape[1]
    ref = run_target("torch", case.graph, case.x, **case.options)
    out = res.aligned_outputs(t)
    return {"output_values_equal": 1 - differing(out, ref.outputs),
            "predictions_equal": float((res.predictions(t) == ref.predictions()).mean()),
            "delay": res.delay}


@pytest.mark.parametrize("library,kind", ALL_CASES, ids=[f"{a}-{b}" for a, b in ALL_CASES])
def test_loihi_emu_runs_library_networks(library, kind, record_property):
    case = _case(library, kind)
    res = run_target("loihi-emu", case.graph, case.x, device="cpu", **case.options)
    assert res.outputs.shape == (case.x.shape[0], case.x.shape[1] + res.delay, case.own.shape[-1])
    agreement = _agreement(case, res)
    record_property("agreement_with_reference", agreement)
    print(f"loihi-emu {case.id}: {agreement}")
    assert res.total_spikes > 0
    assert agreement["output_values_equal"] > 0.5  # a sanity floor only (measured 0.84-1.0, docs/interop.md)


@pytest.mark.lava
@pytest.mark.skipif(not lava_available(), reason=NO_LAVA_REASON)
@pytest.mark.parametrize("network", list(LAVA_CASES))
def test_lava_equals_loihi_emu(network, record_property):
    case = _case(*LAVA_CASES[network])
    lava = run_target("lava", case.graph, case.x, record=True, **case.options)
    emu = run_target("loihi-emu", case.graph, case.x, device="cpu", record=True, **case.options)
    assert np.array_equal(lava.outputs, emu.outputs)
    assert sorted(lava.records) == sorted(emu.records) and lava.records
    for name in lava.records:
        assert np.array_equal(lava.records[name], emu.records[name]), name
    agreement = _agreement(case, lava)
    record_property("agreement_with_reference", agreement)
    print(f"lava == loihi-emu on {case.id}; vs reference: {agreement}")
