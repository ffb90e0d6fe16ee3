"""The Gaussian expectation engine (book §1.1, §4.1–4.3): every ⟨·⟩_K the theory asks for.

* :mod:`~pdlt.gaussian.rules` — the quadrature rules, split at kinks: the only place nodes and
  weights are made (1-D, and the kink-split rule in up to four dimensions).
* :mod:`~pdlt.gaussian.mehler` — Hermite coefficients (one recurrence), the Mehler series and its
  Parseval truncation bound.
* :mod:`~pdlt.gaussian.pairs` — ⟨f(z_a) g(z_b)⟩ for all N² pairs: closed form → Mehler →
  kink-split 2-D rule.
* :mod:`~pdlt.gaussian.products` — ⟨f_1(z_α1)⋯f_k(z_αk)⟩ for k ≤ 4 (three- and four-input
  cubature).
* :mod:`~pdlt.gaussian.orthant` — the same for the relu family in closed form: truncated
  moments and orthant probabilities.
* :mod:`~pdlt.gaussian.moments` — :class:`LayerMoments`, everything one layer step of a
  recursion needs, computed once per layer.
"""

from pdlt.gaussian.mehler import hermite_coefficients
from pdlt.gaussian.moments import LayerMoments, input_pairs
from pdlt.gaussian.orthant import homogeneous_product, orthant_probability
from pdlt.gaussian.pairs import DEFAULT_TOL, correlation, expect_pairs, pair_expectation
from pdlt.gaussian.products import KINKED_ERROR, expect_product, multisets
from pdlt.gaussian.rules import expect

__all__ = [
    "DEFAULT_TOL",
    "KINKED_ERROR",
    "LayerMoments",
    "correlation",
    "expect",
    "expect_pairs",
    "expect_product",
    "hermite_coefficients",
    "homogeneous_product",
    "input_pairs",
    "multisets",
    "orthant_probability",
    "pair_expectation",
]
