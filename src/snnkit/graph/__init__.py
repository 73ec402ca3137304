"""``snnkit.graph``: the bottom layer every other part builds on (torch-free).

What a NIR graph *is* to snnkit lives here once: the error type (:class:`DeployError`), the table of node kinds
(:mod:`~snnkit.graph.kinds`), topology (neighbours, order, flattening, the execution plan), the numpy
definitions of connection nodes (:mod:`~snnkit.graph.ops`), shape inference, and ``.nir`` file I/O with the
time-step default. ``export``, ``deploy``, ``energy`` and ``report`` import it; it imports none of them.
"""
from snnkit.graph import kinds
from snnkit.graph.errors import DeployError
from snnkit.graph.io import DEFAULT_DT, graph_dt, graph_metadata, plain, read_nir, write_nir
from snnkit.graph.shapes import (declared_shape, infer_shapes, input_name, input_shape, neuron_count, neuron_shape,
                                 output_size, weighted_input_shapes)
from snnkit.graph.topology import (GraphPlan, flatten_graph, plan, predecessors, reachable, successors,
                                   topological_order)

__all__ = [
    "DEFAULT_DT", "DeployError", "GraphPlan", "declared_shape", "flatten_graph", "graph_dt", "graph_metadata",
    "infer_shapes", "input_name", "input_shape", "kinds", "neuron_count", "neuron_shape", "output_size", "plain",
    "plan", "predecessors", "reachable", "read_nir", "successors", "topological_order", "weighted_input_shapes",
    "write_nir",
]
