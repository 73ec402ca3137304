"""The export report: what was written, how each layer was mapped, and everything that was lossy.

Written as ``OUTDIR/export_report.json`` by ``snn-export``. ``warnings`` lists what a reader of the NIR file
will not see as snnkit does (reset by subtraction, parameters a target cannot represent); ``notes`` lists
exact transformations (BatchNorm folding, learnable parameters frozen at their current values).
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path


@dataclass
class NodeRecord:
    """One NIR node and the snnkit layer(s) it came from."""

    name: str
    kind: str
    source: str
    neurons: int = 0


@dataclass
class ExportReport:
    """Everything ``snn-export`` did, JSON-ready via :meth:`to_dict`."""

    model: str = ""
    target: str = "nir"
    dt: float = 0.0
    nodes: list[NodeRecord] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    files: dict[str, str] = field(default_factory=dict)
    checks: dict = field(default_factory=dict)
    metadata: dict = field(default_factory=dict)

    def warn(self, message: str) -> None:
        if message not in self.warnings:
            self.warnings.append(message)

    def note(self, message: str) -> None:
        if message not in self.notes:
            self.notes.append(message)

    def to_dict(self) -> dict:
        return asdict(self)

    def write(self, path: "str | Path") -> Path:
        """Write the report as JSON atomically."""
        from snnkit.atomic import atomic_write

        path = Path(path)
        text = json.dumps(self.to_dict(), indent=2, default=float)
        atomic_write(path, lambda tmp: Path(tmp).write_text(text))
        return path
