"""HTML building blocks for the report: figures as data URIs, tables, the page shell."""

from __future__ import annotations

import base64
import html
import io
from typing import TYPE_CHECKING

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

if TYPE_CHECKING:
    from pdlt.report import ReportConfig, Section

STYLE = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:0;color:#1d232a;background:#f6f7f9}
main{max-width:1100px;margin:0 auto;padding:24px 32px 64px;background:#fff;min-height:100vh}
h1{font-size:1.7em;margin:0.2em 0}h2{border-bottom:2px solid #e3e6ea;padding-bottom:4px;margin-top:2em}
h3{font-size:1.05em;margin-top:1.4em}
nav a{margin-right:14px;color:#2962a8;text-decoration:none}
figure{margin:12px 0}figcaption{color:#4a5561;font-size:0.92em;max-width:900px}
img{max-width:100%}
table{border-collapse:collapse;font-size:0.86em;margin:8px 0}
th,td{border:1px solid #dde1e6;padding:3px 8px;text-align:right}
th{background:#f0f2f5}td:first-child,th:first-child{text-align:left}
.ok{color:#1b7f3b;font-weight:600}.bad{color:#b3261e;font-weight:600}.note{color:#4a5561;font-size:0.92em}
.spec td{text-align:left}.scroll{max-height:420px;overflow:auto;display:inline-block}
"""


def figure(fig: plt.Figure, caption: str) -> str:
    """A matplotlib figure as an embedded PNG with its caption; closes the figure."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    return (
        f'<figure><img alt="{html.escape(caption[:80])}" src="data:image/png;base64,{data}">'
        f"<figcaption>{html.escape(caption)}</figcaption></figure>"
    )


def table(df: pd.DataFrame, *, digits: int = 4, scroll: bool = False, cls: str = "") -> str:
    """A DataFrame as an HTML table with numbers rounded for reading."""
    text = df.to_html(
        index=False,
        border=0,
        float_format=lambda v: f"{v:.{digits}g}",
        classes=cls or None,
        escape=True,
    )
    return f'<div class="scroll">{text}</div>' if scroll else text


def paragraph(text: str, cls: str = "") -> str:
    c = f' class="{cls}"' if cls else ""
    return f"<p{c}>{html.escape(text)}</p>"


def status(ok: bool) -> str:
    return "ok" if ok else "CHECK"


def summary_row(check: str, value: str, ok: bool | None) -> dict:
    """One row of the terminal summary: ``ok`` True/False → "ok"/"CHECK", None → "info"."""
    return {"check": check, "value": value, "status": "info" if ok is None else status(ok)}


def offset(j: int, count: int, step: float = 0.18) -> float:
    """Horizontal shift of the j-th of ``count`` point series, so their error bars do not overlap."""
    return (j - (count - 1) / 2) * step


def theory_and_measured(
    ax: plt.Axes,
    x,
    theory=None,
    measured=None,
    error=None,
    *,
    color: str = "k",
    label: str | None = None,
    theory_label: str | None = None,
    theory_style: str = "-",
    marker: str = "o",
    shift: float = 0.0,
) -> None:
    """The report's one panel shape: a theory line and measured points with one-standard-error
    bars, on the same x (the points shifted by ``shift``); either part may be left out."""
    if theory is not None:
        ax.plot(x, theory, theory_style, color=color, lw=1.5, label=theory_label)
    if measured is not None:
        ax.errorbar(
            np.asarray(x, dtype=float) + shift,
            measured,
            yerr=error,
            fmt=marker,
            ms=3.5,
            capsize=2,
            color=color,
            label=label,
        )


def page(config: ReportConfig, sections: list[Section]) -> str:
    nav = "".join(f'<a href="#{s.id}">{html.escape(s.title)}</a>' for s in sections)
    body = "".join(
        f'<section id="{s.id}"><h2>{html.escape(s.title)}</h2>{s.body}'
        f'<p class="note">section computed in {s.seconds:.1f} s</p></section>'
        for s in sections
    )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>pdlt report — {html.escape(config.activation)}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>{STYLE}</style></head>
<body><main>
<h1>pdlt report: {html.escape(config.activation)} MLP, depth {config.depth}</h1>
<p class="note">Theory of Roberts, Yaida &amp; Hanin, <i>The Principles of Deep Learning Theory</i>
(arXiv:2106.10165), beside measurements on ensembles of real PyTorch networks.</p>
<nav>{nav}</nav>
{body}
</main></body></html>
"""
