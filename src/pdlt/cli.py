"""The ``pdlt`` command: options → library → ``to_frame()`` printed as a table.

The library validates every value; a ValueError or TypeError from it (or an OSError from a path)
is printed as one line ``Error: …`` with exit code 2, never as a traceback.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import pandas as pd
import typer
from rich.console import Console
from rich.table import Table

# the (C_W, C_b) options of the commands whose default is the activation's critical point
CriticalCW = Annotated[
    float | None,
    typer.Option("--C-W", help="Weight variance C_W (default: critical where known)."),
]
CriticalCb = Annotated[
    float | None,
    typer.Option("--C-b", help="Bias variance C_b (default: critical with C_W, else 0)."),
]

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="The Principles of Deep Learning Theory, computed and checked on real networks.",
)
console = Console()
_STATUS_STYLE = {"ok": "green", "CHECK": "red"}


@contextmanager
def _library_errors() -> Iterator[None]:
    """Bad input found by the library → one line on stderr and exit code 2."""
    try:
        yield
    except (ValueError, TypeError, OSError) as exc:
        typer.echo(f"Error: {exc}", err=True)  # one line, unwrapped
        raise typer.Exit(2) from None


def _print_frame(df: pd.DataFrame, title: str, *, digits: int = 10) -> None:
    """A DataFrame as a rich table: floats to ``digits`` significant figures, a ``status``
    column coloured."""
    tab = Table(title=title)
    for col in df.columns:
        tab.add_column(str(col))
    for row in df.itertuples(index=False):
        cells = []
        for col, v in zip(df.columns, row, strict=True):
            text = f"{v:.{digits}g}" if isinstance(v, float) else str(v)
            style = _STATUS_STYLE.get(text) if col == "status" else None
            cells.append(f"[{style}]{text}[/{style}]" if style else text)
        tab.add_row(*cells)
    console.print(tab)


def _print_record(df: pd.DataFrame, title: str, *, digits: int = 10) -> None:
    """A one-row DataFrame (a result's ``to_frame()``) as quantity/value rows, None left out."""
    row = df.iloc[0]
    items = [(k, v) for k, v in row.items() if v is not None and not (isinstance(v, str) and not v)]
    _print_frame(pd.DataFrame(items, columns=["quantity", "value"]), title, digits=digits)


@app.command()
def report(
    activation: Annotated[str, typer.Option(help="Built-in activation name.")] = "tanh",
    depth: Annotated[int, typer.Option(help="Number of weight layers L (≥ 2).")] = 10,
    width: Annotated[
        list[int] | None, typer.Option(help="Hidden width to sample at; repeat for several.")
    ] = None,
    C_W: CriticalCW = None,
    C_b: CriticalCb = None,
    n_networks: Annotated[int, typer.Option(help="Networks per ensemble (≥ 2).")] = 1000,
    seed: Annotated[int, typer.Option()] = 0,
    out: Annotated[Path, typer.Option(help="Output folder.")] = Path("pdlt-report"),
    quick: Annotated[bool, typer.Option(help="Small ensembles, for a fast look.")] = False,
    device: Annotated[str, typer.Option(help="cpu or cuda.")] = "cpu",
) -> None:
    """Compute the theory, measure real networks, and write an HTML report."""
    from pdlt.report import ReportConfig, build_report

    t0 = time.perf_counter()
    with _library_errors():
        config = ReportConfig(
            activation=activation,
            depth=depth,
            widths=tuple(width) if width else (32, 256),
            C_W=C_W,
            C_b=C_b,
            n_networks=n_networks,
            seed=seed,
            quick=quick,
            out=out,
            device=device,
        )
        result = build_report(config)
    _print_frame(result.summary, f"pdlt report ({time.perf_counter() - t0:.0f} s)")
    console.print(f"report written to [bold]{result.path.resolve()}[/bold]")


@app.command()
def criticality(
    activation: Annotated[str, typer.Argument(help="Built-in activation name (tanh, gelu, …).")],
    C_b: Annotated[
        float | None, typer.Option("--C-b", help="Also analyse this C_b (with --C-W).")
    ] = None,
    C_W: Annotated[
        float | None, typer.Option("--C-W", help="Also analyse this C_W (with --C-b, default 0).")
    ] = None,
    gains: Annotated[bool, typer.Option(help="Print torch's gains against criticality.")] = True,
) -> None:
    """Critical initialization of ACTIVATION: C_b, C_W, K*, universality class (book ch. 5,
    criticality (5.55), the classes of §5.2–5.3)."""
    from pdlt.init import compare_gains
    from pdlt.theory.criticality import critical_point
    from pdlt.theory.criticality import criticality as criticality_at

    with _library_errors():
        cp = critical_point(activation)
        at = None
        if C_W is not None or C_b is not None:
            at = criticality_at(activation, C_b or 0.0, C_W if C_W is not None else 1.0)
    _print_record(
        cp.to_frame().drop(columns="activation"),
        f"criticality of {activation} (χ_∥ = χ_⊥ = 1, book §5.2–5.3)",
    )
    console.print(cp.note)
    if at is not None:
        frame = at.to_frame()[
            "phase K_star chi_parallel chi_perp c_star chi_c xi_parallel xi_perp".split()
        ]
        _print_record(frame, f"at C_b = {at.C_b:g}, C_W = {at.C_W:g}", digits=8)
        if at.note:
            console.print(at.note)
    if gains:
        _print_frame(
            compare_gains(),
            "torch.nn.init.calculate_gain vs criticality (C_W = gain², C_b = 0)",
            digits=6,
        )


@app.command()
def ntk(
    activation: Annotated[str, typer.Argument(help="Built-in activation name (tanh, relu, …).")],
    depth: Annotated[int, typer.Option(help="Number of weight layers L.")] = 10,
    C_W: Annotated[
        float | None, typer.Option("--C-W", help="Weight variance (default: critical).")
    ] = None,
    C_b: Annotated[
        float | None, typer.Option("--C-b", help="Bias variance (default: critical).")
    ] = None,
) -> None:
    """The NTK of ACTIVATION at initialization: gradient criticality and learning-rate scaling
    (book ch. 8–9: Θ (9.5), rates (9.94)–(9.96)), for one input with |x|²/n_0 = 1."""
    import numpy as np

    from pdlt.network import MLP
    from pdlt.report.common import default_setting, learning_rate_scan
    from pdlt.theory.ntk_criticality import ntk_criticality

    with _library_errors():
        cb, cw = default_setting(activation, C_W, C_b)
        net = MLP(activation, depth, 64, 4, C_W=cw, C_b=cb)
        crit = ntk_criticality(net, np.ones((1, 4)))
        # the book's class rule holds at criticality; for a user-given C_W, C_b balance numerically
        method = "auto" if C_W is None and C_b is None else "numerical"
        scan = learning_rate_scan(net, sorted({5, 10, 20, 50, 100, depth}), method=method)
    console.print(
        f"{activation}, C_W = {cw:.6g}, C_b = {cb:.6g}, depth {depth}: gradients "
        f"[bold]{crit.regime}[/bold] (depth scale {crit.depth_scale:.3g} layers)"
    )
    _print_frame(
        scan,
        f"learning-rate scaling ({scan.attrs['universality_class']} class, "
        f"{scan.attrs['method']} rule; book §9.2–9.4)",
        digits=4,
    )


@app.command("phase-diagram")
def phase_diagram(
    C_W_min: Annotated[float, typer.Option("--C-W-min", help="Smallest C_W.")] = 0.5,
    C_W_max: Annotated[float, typer.Option("--C-W-max", help="Largest C_W.")] = 4.0,
    C_W_num: Annotated[int, typer.Option("--C-W-num", min=1, help="Number of C_W values.")] = 12,
    depth: Annotated[
        list[int] | None, typer.Option(help="Depth L to train at; repeat (default 4…96).")
    ] = None,
    C_b: Annotated[float, typer.Option("--C-b", help="Bias variance C_b.")] = 0.05,
    width: Annotated[int, typer.Option(help="Hidden width n.")] = 64,
    steps: Annotated[int, typer.Option(help="Gradient-descent steps per network.")] = 300,
    learning_rate: Annotated[float, typer.Option(help="η for the mean loss.")] = 2.0,
    n_train: Annotated[int, typer.Option(help="Training examples (≥ 2).")] = 128,
    networks: Annotated[int, typer.Option(help="Networks per cell and seed (≥ 2).")] = 2,
    seeds: Annotated[int, typer.Option(min=1, help="Replicate seeds 0…seeds−1.")] = 1,
    data: Annotated[
        Path | None,
        typer.Option(help="A .npz with arrays X (N, n_0) and y (labels); default digits."),
    ] = None,
    store: Annotated[
        Path, typer.Option(help="Result store: finished cells are kept, a rerun resumes.")
    ] = Path("pdlt-phase-diagram"),
    scheduler: Annotated[
        str, typer.Option(help="serial, processes, or a Dask scheduler address tcp://host:port.")
    ] = "processes",
    workers: Annotated[
        int | None, typer.Option(min=1, help="Local processes (default: CPU count).")
    ] = None,
    out: Annotated[
        Path, typer.Option(help="Figure to write (.png/.pdf); a .csv goes beside it.")
    ] = Path("phase-diagram.png"),
    device: Annotated[str, typer.Option(help="Where the networks train: cpu or cuda.")] = "cpu",
) -> None:
    """Trainability phase diagram: tanh MLPs trained over C_W × depth (Schoenholz et al. 2016),
    with the order–chaos boundary and 6·ξ_⊥ from the theory (book §5.1)."""
    import numpy as np

    from pdlt.experiment.trainability import DEFAULT_DEPTHS, trainability

    with _library_errors():
        if not 0 < C_W_min <= C_W_max:  # the grid's own options (NaN fails here too)
            raise ValueError(f"need 0 < --C-W-min ≤ --C-W-max, got {C_W_min}, {C_W_max}")
        X = y = None
        if data is not None:
            with np.load(data) as arrays:
                if "X" not in arrays or "y" not in arrays:
                    raise ValueError(f"{data} must hold arrays named X and y")
                X, y = arrays["X"], arrays["y"]
        out.parent.mkdir(parents=True, exist_ok=True)  # before the cells run, not after
    t0 = time.perf_counter()
    with _library_errors():
        res = trainability(
            np.linspace(C_W_min, C_W_max, C_W_num).round(4),
            tuple(depth) if depth else DEFAULT_DEPTHS,
            X=X,
            y=y,
            seeds=range(seeds),
            store=store,
            scheduler=scheduler,
            n_workers=workers,
            device=device,
            C_b=C_b,
            width=width,
            steps=steps,
            learning_rate=learning_rate,
            n_train=n_train,
            n_networks=networks,
        )
        fig = res.plot()
        fig.savefig(out, dpi=120, bbox_inches="tight")
        res.to_frame().to_csv(out.with_suffix(".csv"), index=False)
    summary = pd.DataFrame(
        [
            ("cells", len(res.cells)),
            ("critical C_W (χ⊥ = 1)", round(res.theory["critical_C_W"], 4)),
            ("agreement with depth ≤ 6ξ⊥", f"{res.agreement():.0%}"),
            ("best accuracy", round(float(np.nanmax(res.accuracy)), 3)),
        ],
        columns=["quantity", "value"],
    )
    _print_frame(summary, f"trainability phase diagram ({time.perf_counter() - t0:.0f} s)")
    console.print(f"figure written to [bold]{out.resolve()}[/bold]; cells kept in {store}")


@app.command("accuracy-map")
def accuracy_map_cmd(
    activation: Annotated[str, typer.Argument(help="Activation name, e.g. relu or tanh.")],
    method: Annotated[str, typer.Option(help="nngp (infinite width) or trained.")] = "nngp",
    data: Annotated[
        Path | None,
        typer.Option(
            help="A .npz with X, y (MNIST-like): the paper's split and preprocessing (first "
            "100 per class for training, per-example standardised); default the bundled digits."
        ),
    ] = None,
    C_W_min: Annotated[float, typer.Option("--C-W-min")] = 0.5,
    C_W_max: Annotated[float, typer.Option("--C-W-max")] = 4.0,
    C_W_num: Annotated[int | None, typer.Option("--C-W-num", min=1)] = None,
    C_b_min: Annotated[float, typer.Option("--C-b-min")] = 0.0,
    C_b_max: Annotated[float, typer.Option("--C-b-max")] = 2.0,
    C_b_num: Annotated[int | None, typer.Option("--C-b-num", min=1)] = None,
    depth: Annotated[
        list[int] | None, typer.Option(help="Depth L; repeat (default 5 20 50).")
    ] = None,
    n_test: Annotated[int | None, typer.Option(min=1, help="Test examples (default all).")] = None,
    store: Annotated[
        Path | None, typer.Option(help="Result store for --method trained (resumable).")
    ] = None,
    out: Annotated[Path, typer.Option(help="Figure (.png/.pdf); a .csv goes beside it.")] = Path(
        "accuracy-map.png"
    ),
) -> None:
    """Test accuracy over (C_W, C_b) at several depths with the χ⊥ = 1 line (Lee et al. 2017)."""
    import numpy as np

    from pdlt.experiment.accuracy_map import accuracy_map, digits_split, paper_split

    trained = method == "trained"
    try:
        if method not in ("nngp", "trained"):
            raise ValueError(f"--method must be nngp or trained, got {method!r}")
        cw = np.linspace(C_W_min, C_W_max, C_W_num or (8 if trained else 15))
        cb = np.linspace(C_b_min, C_b_max, C_b_num or (5 if trained else 11))
        if data is None:
            XA, yA, XB, yB = digits_split(n_test=n_test)
        else:
            with np.load(data) as arrays:
                if "X" not in arrays or "y" not in arrays:
                    raise ValueError(f"{data} must hold arrays named X and y")
                X, y = arrays["X"].reshape(len(arrays["X"]), -1), arrays["y"]
            XA, yA, XB, yB = paper_split(X, y, n_test=n_test)
        extra = {"store": store} if trained else {}
        t0 = time.perf_counter()
        res = accuracy_map(
            activation,
            cw,
            cb,
            tuple(depth) if depth else (5, 20, 50),
            XA,
            yA,
            XB,
            yB,
            method=method,
            **extra,
        )
    except (ValueError, TypeError, OSError) as exc:
        raise typer.BadParameter(str(exc)) from None
    out.parent.mkdir(parents=True, exist_ok=True)
    res.plot().savefig(out, dpi=120, bbox_inches="tight")
    res.to_frame().to_csv(out.with_suffix(".csv"), index=False)
    tab = Table(title=f"accuracy map, {activation}, {method} ({time.perf_counter() - t0:.0f} s)")
    for col in ("depth", "best accuracy", "best C_W (median over C_b)", "degenerate points"):
        tab.add_column(col)
    for d, L in enumerate(res.depths):
        tab.add_row(
            str(L),
            f"{res.accuracy[d].max():.3f}",
            f"{np.median(res.best_C_W()[d]):.3g}",
            str(int(res.degenerate[d].sum())),
        )
    console.print(tab)
    console.print(f"figure written to [bold]{out.resolve()}[/bold]")


@app.callback()
def _root() -> None:
    """pdlt: theory vs real networks."""


@app.command("finite-width")
def finite_width(
    activation: Annotated[str, typer.Argument(help="Built-in activation name (tanh, relu, …).")],
    depth: Annotated[int, typer.Option(help="Number of weight layers L.")] = 10,
    width: Annotated[int, typer.Option(help="Hidden width n.")] = 100,
    C_W: CriticalCW = None,
    C_b: CriticalCb = None,
    K_first: Annotated[
        float,
        typer.Option(
            "--K-first",
            "--K1",
            help="First-layer kernel K^(1) (> C_b), (5.2); --K1 is its old name.",
        ),
    ] = 1.0,
) -> None:
    """Single-input finite-width theory per layer: K, V/K², excess kurtosis 3V/(nK²), and the
    relative kernel shift G1/(nK) at width n (book §4.2–4.5: (4.119), (4.115); §5.4)."""
    import math

    import numpy as np

    from pdlt import _validation
    from pdlt.network import MLP
    from pdlt.report.common import default_setting
    from pdlt.theory.vertex import four_point_vertex, kernel_correction

    with _library_errors():
        cb, cw = default_setting(activation, C_W, C_b)
        net = MLP(activation, depth=depth, width=width, input_dim=1, C_W=cw, C_b=cb)
        # K^(1) = C_b + C_W x²/n_0 (5.2): the one input that gives it
        if _validation.real("K_first", K_first) <= cb:
            raise ValueError(
                f"--K-first must be > C_b = {cb:g} (K^(1) = C_b + C_W x²), got {K_first}"
            )
        x = [[math.sqrt((K_first - cb) / cw)]]
        fpv, kc = four_point_vertex(net, x), kernel_correction(net, x)
    frame = pd.DataFrame(
        {
            "layer": np.arange(1, depth + 1),
            "ℓ/n": fpv.effective_depth,
            "K": kc.K[:, 0, 0],
            "V/K²": fpv.normalized[:, 0],
            "excess kurtosis": fpv.excess_kurtosis[:, 0],
            "G1/(nK)": kc.K1[:, 0, 0] / (fpv.widths * kc.K[:, 0, 0]),
        }
    )
    _print_frame(
        frame,
        f"{activation}, C_W = {cw:g}, C_b = {cb:g}, n = {width}, K^(1) = {K_first:g}",
        digits=6,
    )


@app.command("dntk")
def dntk_command(
    activation: Annotated[str, typer.Argument(help="Built-in activation name (tanh, relu, …).")],
    depth: Annotated[int, typer.Option(help="Number of weight layers L.")] = 10,
    width: Annotated[int, typer.Option(help="Hidden width n.")] = 100,
    C_W: CriticalCW = None,
    C_b: CriticalCb = None,
) -> None:
    """Representation learning at O(1/n), per layer, for one input with |x|²/n_0 = 1 and
    λ_b = λ_W = 1: the dNTK statistics P/(nΘ²), Q/(nΘ²) (book §11.3, (11.49), (11.52)), the
    ddNTK means R K/(nΘ³), S K/(nΘ³), T K/(nΘ³), U K/(nΘ³) (§∞.1, (∞.14)–(∞.17)) and the NTK
    mean correction Θ1/(nΘ), at width n."""
    import numpy as np

    from pdlt.network import MLP
    from pdlt.report.common import default_setting
    from pdlt.theory.ddntk import ddntk
    from pdlt.theory.dntk import ntk_correction

    with _library_errors():
        cb, cw = default_setting(activation, C_W, C_b)
        net = MLP(activation, depth=depth, width=width, input_dim=4, C_W=cw, C_b=cb)
        x = np.ones((1, 4))
        dd, corr = ddntk(net, x), ntk_correction(net, x)
    n = np.asarray(net.widths[:-1], float)
    th, k = dd.Theta[:, 0, 0], dd.K[:, 0, 0]

    def shown(v: np.ndarray) -> np.ndarray:
        # quadrature round-off (~1e-17) of statistics that vanish exactly (ReLU's Θ1) reads as 0
        return np.where(np.abs(v) < 1e-12, 0.0, v)

    layer = np.arange(1, depth + 1)
    first = pd.DataFrame(
        {
            "layer": layer,
            "P/(nΘ²)": shown(dd.P[:, 0, 0, 0, 0] / (n * th**2)),
            "Q/(nΘ²)": shown(dd.Q[:, 0, 0, 0, 0] / (n * th**2)),
            "Θ1/(nΘ)": shown(corr.Theta1[:, 0, 0] / (n * th)),
        }
    )
    second = pd.DataFrame(
        {"layer": layer}
        | {f"{s} K/(nΘ³)": shown(getattr(dd, s)[:, 0, 0, 0, 0] * k / (n * th**3)) for s in "RSTU"}
    )
    title = f"{activation}, C_W = {cw:g}, C_b = {cb:g}, n = {width}, |x|²/n_0 = 1"
    _print_frame(first, f"dNTK and NTK mean correction (§11.3, eq. 9.3); {title}", digits=6)
    _print_frame(second, f"ddNTK means (§∞.1); {title}", digits=6)


@app.command("recommend")
def recommend(
    activation: Annotated[str, typer.Argument(help="Built-in activation name.")],
    params: Annotated[int, typer.Option(help="Parameter budget (weights and biases).")],
    input_dim: Annotated[int, typer.Option(help="Input dimension n_0.")],
    output_dim: Annotated[int, typer.Option(help="Output dimension n_L.")] = 1,
    depth: Annotated[int | None, typer.Option(help="Fix the depth L.")] = None,
    width: Annotated[int | None, typer.Option(help="Fix the hidden width n.")] = None,
    skip: Annotated[float | None, typer.Option(help="Residual γ (default: plain MLP).")] = None,
) -> None:
    """A network for ACTIVATION and a parameter budget: depth, width, initialization and
    learning rates, each with the rule behind it (criticality, eqs. 9.94–9.95, r* of A.73/B.36)."""
    from pdlt.theory.design import recommend as _recommend

    with _library_errors():
        rec = _recommend(
            activation,
            n_params=params,
            input_dim=input_dim,
            output_dim=output_dim,
            depth=depth,
            width=width,
            skip=skip,
        )
    _print_frame(rec.to_frame(), f"pdlt recommend {rec.activation}", digits=6)
    for w in rec.warnings:
        typer.echo(f"Warning: {w}")


@app.command("aspect-ratio")
def aspect_ratio(
    activation: Annotated[str, typer.Argument(help="Built-in activation with a critical point.")],
    params: Annotated[int, typer.Option(help="Parameter budget of every network.")] = 6000,
    ratio: Annotated[
        list[float] | None, typer.Option(help="Aspect ratio L/n; repeat (default 0.025…1).")
    ] = None,
    skip: Annotated[float, typer.Option(help="Residual γ, |γ| < 1.")] = 0.0,
    networks: Annotated[int, typer.Option(help="Networks per shape (≥ 2).")] = 4,
    steps: Annotated[int, typer.Option(help="Gradient-descent steps.")] = 500,
    learning_rate: Annotated[float, typer.Option(help="η for the mean loss.")] = 1.0,
    seed: Annotated[int, typer.Option()] = 0,
    out: Annotated[
        Path | None, typer.Option(help="Figure to write (.png/.pdf); a .csv goes beside it.")
    ] = None,
) -> None:
    """Test loss of digits-trained networks of equal parameter count across aspect ratios L/n,
    beside the theory's r* (book eqs. A.73, B.36)."""
    from pdlt.experiment.aspect_ratio import DEFAULT_RATIOS, aspect_ratio_experiment

    with _library_errors():
        res = aspect_ratio_experiment(
            activation, params, tuple(ratio) if ratio else DEFAULT_RATIOS, skip=skip,
            n_networks=networks, steps=steps, learning_rate=learning_rate, seed=seed,
        )  # fmt: skip
    r_star = "none" if res.r_star is None else f"{res.r_star:.4g}"
    _print_frame(res.to_frame(), f"pdlt aspect-ratio {activation}: r* = {r_star}", digits=4)
    if res.note:
        typer.echo(res.note)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        res.plot().figure.savefig(out, dpi=120, bbox_inches="tight")
        res.to_frame().to_csv(out.with_suffix(".csv"), index=False)
        console.print(f"figure written to [bold]{out.resolve()}[/bold]")


def main() -> None:
    app()
