"""Deployment reports: a model run on several targets, compared with the torch reference (``snn-report``).

- :mod:`~snnkit.report.collect`: run the targets and gather the data (``build_report``, the input helpers);
- :mod:`~snnkit.report.compare`: accuracy and agreement with the reference;
- :mod:`~snnkit.report.metrics`: NeuroBench-style metrics from the NIR graph and the result record;
- :mod:`~snnkit.report.attacks`: robustness results from ``snn-attack --json`` files;
- :mod:`~snnkit.report.plots`: the PNG plots (matplotlib Agg);
- :mod:`~snnkit.report.writers`: ``report.json``, ``report.md``, self-contained ``report.html``.
"""
from snnkit.report.collect import Inputs, Report, build_report, inputs_from_dataset, inputs_from_file
from snnkit.report.writers import write_report

__all__ = ["Inputs", "Report", "build_report", "inputs_from_dataset", "inputs_from_file", "write_report"]
