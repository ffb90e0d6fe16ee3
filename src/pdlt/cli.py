"""The ``pdlt`` command."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="The Principles of Deep Learning Theory, computed and checked on real networks.",
)
console = Console()


@app.command()
def report(
    activation: Annotated[str, typer.Option(help="Built-in activation name.")] = "tanh",
    depth: Annotated[int, typer.Option(min=2, help="Number of weight layers L.")] = 10,
    width: Annotated[
        list[int] | None, typer.Option(help="Hidden width to sample at; repeat for several.")
    ] = None,
    C_W: Annotated[
        float | None,
        typer.Option("--C-W", help="Weight variance C_W (default: critical where known)."),
    ] = None,
    C_b: Annotated[float, typer.Option("--C-b", help="Bias variance C_b.")] = 0.0,
    n_networks: Annotated[int, typer.Option(min=2, help="Networks per ensemble.")] = 1000,
    seed: Annotated[int, typer.Option(min=0)] = 0,
    out: Annotated[Path, typer.Option(help="Output folder.")] = Path("pdlt-report"),
    quick: Annotated[bool, typer.Option(help="Small ensembles, for a fast look.")] = False,
    device: Annotated[str, typer.Option(help="cpu or cuda.")] = "cpu",
) -> None:
    """Compute the theory, measure real networks, and write an HTML report."""
    from pdlt.activations import activation as make_activation
    from pdlt.report import ReportConfig, build_report

    try:
        make_activation(activation)
        widths = tuple(width) if width else (32, 256)
        if any(w < 1 for w in widths):
            raise ValueError(f"--width must be ≥ 1, got {list(widths)}")
        if C_W is not None and C_W <= 0:
            raise ValueError(f"--C-W must be > 0, got {C_W}")
        if C_b < 0:
            raise ValueError(f"--C-b must be ≥ 0, got {C_b}")
    except (ValueError, TypeError) as exc:
        raise typer.BadParameter(str(exc)) from None
    config = ReportConfig(
        activation=activation,
        depth=depth,
        widths=widths,
        C_W=C_W,
        C_b=C_b,
        n_networks=n_networks,
        seed=seed,
        quick=quick,
        out=out,
        device=device,
    )
    t0 = time.perf_counter()
    result = build_report(config)
    tab = Table(title=f"pdlt report ({time.perf_counter() - t0:.0f} s)")
    for col in ("section", "check", "value", "status"):
        tab.add_column(col)
    for row in result.summary.itertuples(index=False):
        style = "green" if row.status == "ok" else "red"
        tab.add_row(row.section, row.check, row.value, f"[{style}]{row.status}[/{style}]")
    console.print(tab)
    console.print(f"report written to [bold]{result.path.resolve()}[/bold]")


@app.callback()
def _root() -> None:
    """pdlt: theory vs real networks."""


def main() -> None:
    app()
