"""A target written outside snnkit, in one file: snnkit's executor stepping every graph one step at a time.

This is what docs/architecture.md's "Adding a target" describes, and what tests/test_new_target.py registers
with one line and drives through every command. Stepping layer by layer through time is how an event-driven
runtime or a recurrent-capable simulator proceeds; for feed-forward graphs it must agree with the layer-at-a-time
reference.
"""
from __future__ import annotations

import nir

from snnkit.deploy.torch_target import Runner, TorchBasedTarget


class SteppedTarget(TorchBasedTarget):
    """The reference executor, one time step at a time. Options: ``dt`` (s), ``batch_size``."""

    name = "torch-stepped"

    def build(self, graph: nir.NIRGraph) -> Runner:
        from snnkit.export.executor import NIRNetwork

        net = NIRNetwork(graph, dt=self.dt).eval()
        self.info.update(dt=net.dt, stepped=True)
        return lambda x: net.run(x, stepped=True)
