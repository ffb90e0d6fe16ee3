"""The HTML report: every capability adds a section, theory beside measurement.

A section is a function ``(config: ReportConfig) -> Section`` listed in :data:`SECTIONS` as
``"module:function"``. :func:`build_report` runs them in order and writes one self-contained
``index.html`` (figures embedded as PNG data URIs, no external assets), so it opens offline.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from pdlt.report.render import page

# In the book's order: ch. 4, 4 (finite width), 5, 8–9, 6 and 10.
SECTIONS: tuple[str, ...] = (
    "pdlt.report.sections.kernel:kernel_section",
    "pdlt.report.sections.finite_width:finite_width_section",
    "pdlt.report.sections.criticality:criticality_section",
    "pdlt.report.sections.ntk:ntk_section",
    "pdlt.report.sections.learning:learning_section",
    "pdlt.report.sections.bayes:bayes_section",
    "pdlt.report.sections.representation:representation_section",
    "pdlt.report.sections.accuracy_map:accuracy_map_section",
    "pdlt.report.sections.architecture:architecture_section",
)


@dataclass(frozen=True)
class ReportConfig:
    """What the report is about; every section reads the same config.

    ``widths`` are the hidden widths to sample at (one ensemble per width), ``quick`` trades
    precision for time (fewer networks) for smoke tests. ``C_W``/``C_b`` left None take the
    activation's critical setting (:func:`pdlt.report.common.default_setting`). Every field is
    validated here, before any section runs (ValueError/TypeError naming the field).
    """

    activation: str = "tanh"
    depth: int = 10
    widths: tuple[int, ...] = (32, 256)
    C_W: float | None = None  # None: the activation's critical value where one is known
    C_b: float | None = None  # None: critical where C_W is None too, else 0
    n_networks: int = 1000
    seed: int = 0
    quick: bool = False
    out: Path = Path("pdlt-report")
    device: str = "cpu"

    def __post_init__(self) -> None:
        from pdlt import _validation as v
        from pdlt.activations import activation

        if not isinstance(self.activation, str):
            raise TypeError(f"activation must be a built-in name, got {self.activation!r}")
        activation(self.activation)  # unknown names raise, listing the built-ins
        v.integer("depth", self.depth, min=2)
        widths = (self.widths,) if isinstance(self.widths, int) else tuple(self.widths)
        if not widths:
            raise ValueError("widths must hold at least one hidden width")
        object.__setattr__(self, "widths", tuple(v.integer("widths", w, min=1) for w in widths))
        if self.C_W is not None:
            v.positive("C_W", self.C_W)
        if self.C_b is not None:
            v.non_negative("C_b", self.C_b)
        v.integer("n_networks", self.n_networks, min=2)
        v.seed("seed", self.seed)
        out = Path(self.out)
        blocker = next((p for p in (out, *out.parents) if p.exists() and not p.is_dir()), None)
        if blocker is not None:
            raise ValueError(f"out: cannot write the report to {out}: {blocker} is a file")
        object.__setattr__(self, "out", out)

    @property
    def ensemble_size(self) -> int:
        return min(self.n_networks, 200) if self.quick else self.n_networks


@dataclass(frozen=True)
class Section:
    """One section of the report.

    ``body`` is trusted HTML made by :mod:`pdlt.report.render` helpers; ``summary`` holds rows
    (dicts) for the terminal summary table: ``{"section", "check", "value", "status"}``.
    """

    id: str
    title: str
    body: str
    summary: Sequence[dict] = field(default_factory=tuple)
    seconds: float = 0.0


@dataclass(frozen=True)
class ReportResult:
    path: Path
    summary: pd.DataFrame
    sections: tuple[Section, ...]


def _load(path: str) -> Callable[[ReportConfig], Section]:
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


def build_report(
    config: ReportConfig = ReportConfig(), *, sections: Sequence[str] | None = None
) -> ReportResult:
    """Run every section and write ``config.out/index.html`` (the folder is made first, so a
    path that cannot be written fails before any section runs)."""
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    done = []
    for path in sections if sections is not None else SECTIONS:
        t0 = time.perf_counter()
        sec = _load(path)(config)
        done.append(
            Section(sec.id, sec.title, sec.body, tuple(sec.summary), time.perf_counter() - t0)
        )
    target = out / "index.html"
    target.write_text(page(config, done), encoding="utf-8")
    rows = [dict(r, section=s.title) for s in done for r in s.summary]
    summary = pd.DataFrame(rows, columns=["section", "check", "value", "status"])
    return ReportResult(path=target, summary=summary, sections=tuple(done))
