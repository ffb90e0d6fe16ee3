"""Design rules from the book's appendices: the optimal aspect ratio r* = L/n (book App. A, B).

At criticality V^{(ℓ)}/(n K^{(ℓ)2}) ≈ ν ℓ/n (A.68). The mutual information between groups of
output neurons, at next-to-leading order, is maximal at (A.73)

    r* = (4 / (20 + 3 n_L)) · (1/ν)

and a residual network has the same rule with ν(γ) (B.36). ν comes from
:func:`pdlt.critical_point` (``vertex_growth``; ν(γ) for ``skip`` ≠ 0).
"""

from __future__ import annotations

from pdlt import _validation
from pdlt.theory.criticality import critical_point
from pdlt.theory.criticality._common import ActivationLike


def optimal_aspect_ratio(
    activation: ActivationLike, output_dim: int = 1, skip: float = 0.0
) -> float:
    """r* = L/n that maximizes the NLO mutual information of the outputs, (4/(20 + 3n_L))/ν(γ)
    (book eqs. A.73, B.36).

    Raises
    ------
    ValueError
        When the activation has no criticality (ν is defined at criticality only), or when ν(γ)
        is not available (a residual network with a non-odd σ, see :func:`pdlt.critical_point`).

    Examples
    --------
    >>> pdlt.optimal_aspect_ratio("tanh")          # (4/23)/(2/3) = 0.26087
    """
    n_L = _validation.integer("output_dim", output_dim, min=1)
    cp = critical_point(activation, skip=skip)
    if not cp.exists:
        raise ValueError(
            f"{cp.activation} has no criticality, so ν and r* are undefined: {cp.note}"
        )
    nu = cp.vertex_growth
    if nu is None or not nu > 0:
        raise ValueError(f"ν is not available for {cp.activation} at skip = {skip:g}: {cp.note}")
    return 4.0 / (20.0 + 3.0 * n_L) / nu
