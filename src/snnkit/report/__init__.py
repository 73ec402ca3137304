"""Deployment reports: models run on several targets, compared with the torch reference and with their
non-spiking twin on a GPU (``snn-report``; docs/report.md). Collect, then summarise, then write:

- :mod:`~snnkit.report.collect`: run the targets and gather the data (``build_report`` for one model,
  ``build_comparison`` for several, the input helpers);
- :mod:`~snnkit.report.compare`: accuracy and agreement with the reference;
- :mod:`~snnkit.report.metrics`: NeuroBench-style metrics from the NIR graph and the result record;
- :mod:`~snnkit.report.gpu`: the GPU baseline (the twin costed from published figures, NVML measurement);
- :mod:`~snnkit.report.robustness`: the report's own attacks; :mod:`~snnkit.report.attacks`: ``snn-attack``
  result files, merged into robust-accuracy-vs-eps curves;
- :mod:`~snnkit.report.summary`: the decision table, best values, Pareto points;
- :mod:`~snnkit.report.plots`: the PNG plots (matplotlib Agg);
- :mod:`~snnkit.report.writers`: ``report.json``, ``report.md``, self-contained ``report.html``.
"""
from snnkit.report.collect import Inputs, Report, build_report, inputs_from_dataset, inputs_from_file
from snnkit.report.writers import write_report

__all__ = ["Inputs", "Report", "build_report", "inputs_from_dataset", "inputs_from_file", "write_report"]
