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


def _checked_activation(activation: str, C_W: float | None, C_b: float | None):
    """The Activation named on the command line, with --C-W/--C-b checked, or a usage error."""
    from pdlt.activations import activation as make_activation

    try:
        act = make_activation(activation)
        if C_W is not None and C_W <= 0:
            raise ValueError(f"--C-W must be > 0, got {C_W}")
        if C_b is not None and C_b < 0:
            raise ValueError(f"--C-b must be ≥ 0, got {C_b}")
    except (ValueError, TypeError) as exc:
        raise typer.BadParameter(str(exc)) from None
    return act


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
    from pdlt.report import ReportConfig, build_report

    _checked_activation(activation, C_W, C_b)
    widths = tuple(width) if width else (32, 256)
    if any(w < 1 for w in widths):
        raise typer.BadParameter(f"--width must be ≥ 1, got {list(widths)}")
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
    """Critical initialization of ACTIVATION: C_b, C_W, K*, universality class (book ch. 5)."""
    from pdlt.init import compare_gains
    from pdlt.theory.criticality import critical_point
    from pdlt.theory.criticality import criticality as criticality_at

    act = _checked_activation(activation, C_W, C_b)
    cp = critical_point(act)
    tab = Table(title=f"criticality of {act.name} (χ_∥ = χ_⊥ = 1, book §5.2–5.3)")
    tab.add_column("quantity")
    tab.add_column("value")
    for key in (
        "universality_class C_b C_W K_star stability chi_parallel chi_perp a1 b1 p_perp "
        "vertex_growth"
    ).split():
        value = getattr(cp, key)
        if value is not None:
            tab.add_row(key, f"{value:.10g}" if isinstance(value, float) else str(value))
    console.print(tab)
    console.print(cp.note)
    if C_W is not None or C_b is not None:
        at = criticality_at(act, C_b or 0.0, C_W if C_W is not None else 1.0)
        one = Table(title=f"at C_b = {at.C_b:g}, C_W = {at.C_W:g}")
        one.add_column("quantity")
        one.add_column("value")
        for key in "phase K_star chi_parallel chi_perp c_star chi_c xi_parallel xi_perp".split():
            value = getattr(at, key)
            one.add_row(key, f"{value:.8g}" if isinstance(value, float) else str(value))
        console.print(one)
        if at.note:
            console.print(at.note)
    if gains:
        df = compare_gains()
        g = Table(title="torch.nn.init.calculate_gain vs criticality (C_W = gain², C_b = 0)")
        for col in df.columns:
            g.add_column(str(col))
        for row in df.itertuples(index=False):
            g.add_row(*[f"{v:.6g}" if isinstance(v, float) else str(v) for v in row])
        console.print(g)


@app.command()
def ntk(
    activation: Annotated[str, typer.Argument(help="Built-in activation name (tanh, relu, …).")],
    depth: Annotated[int, typer.Option(min=1, help="Number of weight layers L.")] = 10,
    C_W: Annotated[
        float | None, typer.Option("--C-W", help="Weight variance (default: critical).")
    ] = None,
    C_b: Annotated[
        float | None, typer.Option("--C-b", help="Bias variance (default: critical).")
    ] = None,
) -> None:
    """The NTK of ACTIVATION at initialization: gradient criticality and learning-rate scaling
    (book ch. 8–9), for one input with |x|²/n_0 = 1."""
    import numpy as np

    from pdlt.network import MLP
    from pdlt.theory.criticality import critical_point
    from pdlt.theory.ntk import learning_rates, ntk_criticality
    from pdlt.theory.ntk import ntk as ntk_theory

    act = _checked_activation(activation, C_W, C_b)
    cp = critical_point(act)
    cw = C_W if C_W is not None else (float(cp.C_W) if cp.exists else 1.0)
    cb = C_b if C_b is not None else (float(cp.C_b) if cp.exists and C_W is None else 0.0)
    x = np.ones((1, 4))
    net = MLP(act, depth, 64, 4, C_W=cw, C_b=cb)
    crit = ntk_criticality(net, x)
    console.print(
        f"{act.name}, C_W = {cw:.6g}, C_b = {cb:.6g}, depth {depth}: gradients "
        f"[bold]{crit.regime}[/bold] (depth scale {crit.depth_scale:.3g} layers)"
    )
    # the book's class formulas hold at criticality; for a user-given C_W, C_b balance numerically
    method = "auto" if C_W is None and C_b is None else "numerical"

    def rates(L: int):
        return learning_rates(act, L, method=method, C_W=cw, C_b=cb)

    try:
        lr = rates(depth)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    tab = Table(title=f"learning-rate scaling ({lr.universality_class}; book §9.2–9.4)")
    for col in (
        "depth L",
        "Θ^(L), λ = 1",
        "Θ^(L), scaled λ",
        "λ_b^(1)",
        "λ_b^(L)",
        "λ_W^(1)",
        "λ_W^(L)",
    ):
        tab.add_column(col)
    for L in sorted({5, 10, 20, 50, 100, depth}):
        base, r = net.with_(depth=L), rates(L)
        values = (
            ntk_theory(base, x).Theta[-1, 0, 0],
            ntk_theory(r.apply(base), x).Theta[-1, 0, 0],
            r.lambda_b[0],
            r.lambda_b[-1],
            r.lambda_W[0],
            r.lambda_W[-1],
        )
        tab.add_row(str(L), *[f"{v:.4g}" for v in values])
    console.print(tab)


@app.command("phase-diagram")
def phase_diagram(
    C_W_min: Annotated[float, typer.Option("--C-W-min", help="Smallest C_W.")] = 0.5,
    C_W_max: Annotated[float, typer.Option("--C-W-max", help="Largest C_W.")] = 4.0,
    C_W_num: Annotated[int, typer.Option("--C-W-num", min=1, help="Number of C_W values.")] = 12,
    depth: Annotated[
        list[int] | None, typer.Option(help="Depth L to train at; repeat (default 4…96).")
    ] = None,
    C_b: Annotated[float, typer.Option("--C-b", help="Bias variance C_b.")] = 0.05,
    width: Annotated[int, typer.Option(min=1)] = 64,
    steps: Annotated[int, typer.Option(min=1, help="Gradient-descent steps per network.")] = 300,
    learning_rate: Annotated[float, typer.Option(help="η for the mean loss.")] = 2.0,
    n_train: Annotated[int, typer.Option(min=2, help="Training examples.")] = 256,
    networks: Annotated[int, typer.Option(min=1, help="Networks per cell and seed.")] = 2,
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
) -> None:
    """Trainability phase diagram: tanh MLPs trained over C_W × depth (Schoenholz et al. 2016),
    with the order–chaos boundary and 6·ξ_⊥ from the theory (book §5.1)."""
    import numpy as np

    from pdlt.experiment.trainability import DEFAULT_DEPTHS, trainability

    try:
        if not 0 < C_W_min <= C_W_max:
            raise ValueError(f"need 0 < --C-W-min ≤ --C-W-max, got {C_W_min}, {C_W_max}")
        if C_b < 0:
            raise ValueError(f"--C-b must be ≥ 0, got {C_b}")
        if learning_rate <= 0:
            raise ValueError(f"--learning-rate must be > 0, got {learning_rate}")
        if scheduler not in ("serial", "processes") and "://" not in scheduler:
            raise ValueError(
                f"--scheduler must be serial, processes or tcp://host:port, got {scheduler!r}"
            )
        X = y = None
        if data is not None:
            with np.load(data) as arrays:
                if "X" not in arrays or "y" not in arrays:
                    raise ValueError(f"{data} must hold arrays named X and y")
                X, y = arrays["X"], arrays["y"]
    except (ValueError, TypeError, OSError) as exc:
        raise typer.BadParameter(str(exc)) from None
    t0 = time.perf_counter()
    res = trainability(
        np.linspace(C_W_min, C_W_max, C_W_num).round(4),
        tuple(depth) if depth else DEFAULT_DEPTHS,
        X=X,
        y=y,
        seeds=range(seeds),
        store=store,
        scheduler=scheduler,
        n_workers=workers,
        C_b=C_b,
        width=width,
        steps=steps,
        learning_rate=learning_rate,
        n_train=n_train,
        n_networks=networks,
    )
    fig = res.plot()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120, bbox_inches="tight")
    res.to_frame().to_csv(out.with_suffix(".csv"), index=False)
    tab = Table(title=f"trainability phase diagram ({time.perf_counter() - t0:.0f} s)")
    tab.add_column("quantity")
    tab.add_column("value")
    tab.add_row("cells", str(len(res.cells)))
    tab.add_row("critical C_W (χ⊥ = 1)", f"{res.theory['critical_C_W']:.4f}")
    tab.add_row("agreement with depth ≤ 6ξ⊥", f"{res.agreement():.0%}")
    tab.add_row("best accuracy", f"{np.nanmax(res.accuracy):.3f}")
    console.print(tab)
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
    depth: Annotated[int, typer.Option(min=2, help="Number of weight layers L.")] = 10,
    width: Annotated[int, typer.Option(min=1, help="Hidden width n.")] = 100,
    C_W: Annotated[
        float | None,
        typer.Option("--C-W", help="Weight variance C_W (default: critical where known)."),
    ] = None,
    C_b: Annotated[float, typer.Option("--C-b", help="Bias variance C_b.")] = 0.0,
    K1: Annotated[float, typer.Option("--K1", min=0, help="First-layer kernel K^(1) (> 0).")] = 1.0,
) -> None:
    """Single-input finite-width theory per layer: K, V/K², excess kurtosis 3V/(nK²), and the
    relative kernel shift K1/(nK) at width n (book §4.2–4.5, §5.4)."""
    import math

    from pdlt.activations import activation as make_activation
    from pdlt.network import MLP
    from pdlt.report import ReportConfig
    from pdlt.report.common import report_C_W
    from pdlt.theory.vertex import kernel_correction

    try:
        make_activation(activation)
        cw = C_W if C_W is not None else report_C_W(ReportConfig(activation=activation))
        if cw <= 0 or C_b < 0 or K1 <= C_b:
            raise ValueError(f"need --C-W > 0, --C-b ≥ 0 and --K1 > C_b, got {cw}, {C_b}, {K1}")
        net = MLP(activation, depth=depth, width=width, input_dim=1, C_W=cw, C_b=C_b)
    except (ValueError, TypeError) as exc:
        raise typer.BadParameter(str(exc)) from None
    kc = kernel_correction(net, [[math.sqrt((K1 - C_b) / cw)]])
    tab = Table(title=f"{activation}, C_W = {cw:g}, C_b = {C_b:g}, n = {width}, K^(1) = {K1:g}")
    for col in ("layer", "ℓ/n", "K", "V/K²", "excess kurtosis", "K1/(nK)"):
        tab.add_column(col)
    n_prev = net.widths[:-1]
    for ell in range(depth):
        K, V, G1 = kc.K[ell, 0, 0], kc.V_pairs[ell, 0, 0], kc.K1[ell, 0, 0]
        tab.add_row(
            str(ell + 1),
            f"{(ell + 1) / n_prev[ell]:.3g}",
            f"{K:.6g}",
            f"{V / K**2:.5g}",
            f"{3 * V / (n_prev[ell] * K**2):.4g}",
            f"{G1 / (n_prev[ell] * K):+.3e}",
        )
    console.print(tab)


def main() -> None:
    app()
