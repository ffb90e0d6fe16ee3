"""Learning at infinite width: Bayesian (NNGP) posterior, evidence, and the kernel prediction of
gradient descent (book ch. 6.3, 7, 10).

Notation (book §6.3, §10.1): training samples α̃ ∈ A, test samples β̇ ∈ B. K ≡ K^{(L)} is the
output-layer kernel and Θ ≡ Θ^{(L)} the frozen NTK, both on D = A ∪ B. A tilde marks the training
block (K̃ = K_AA) and K̃^{-1} is the inverse of that block. At infinite width every output
i = 1…n_L is an independent copy ("let's not wire together", §6.3.2), so targets y are an
(N_A, n_out) array and every formula acts column by column with one covariance.

* Bayesian posterior (§6.3, noise ε² on the training block):
      m_B = K_BA (K̃ + ε²)^{-1} y,      𝕂_BB = K_BB − K_BA (K̃ + ε²)^{-1} K_AB.
* Evidence (§6.3.2):  log p(y|H) = −½ Σ_i y_iᵀ (K̃+ε²)^{-1} y_i − (n_out/2) log det 2π(K̃+ε²).
* Kernel prediction of MSE gradient descent (§10.2; loss ½Σ(z − y)², step η):
      T(t) = Θ_BA Θ̃^{-1} [1 − (1 − ηΘ̃)^t]     (gradient flow: e^{−ηtΘ̃}; t = ∞: Θ_BA Θ̃^{-1})
      mean m_B(t) = T(t) y,   Σ_BB(t) = K_BB − T K_AB − K_BA Tᵀ + T K_AA Tᵀ.
  At t = ∞ the result is the same for every convergent algorithm (algorithm independence,
  §10.2.4).
* Generalization (§10.3): E[(z_β̇ − y_β̇)²] = (m_β̇ − y_β̇)² + Σ_β̇β̇ (bias² + variance).

Linear algebra is Cholesky with triangular solves (no inverses). A matrix that is not numerically
positive definite gets a diagonal jitter from a fixed schedule and a warning that states it.
"""

from __future__ import annotations

import math
import numbers
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.linalg
import torch
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.utils._param_validation import Interval, Options
from sklearn.utils.validation import check_array, check_is_fitted, validate_data

from pdlt.network import MLP, validate_inputs
from pdlt.theory.kernel import KERNEL
from pdlt.theory.layers import gram, propagate, propagate_cross, propagate_diagonal
from pdlt.theory.ntk import NTK_MEAN

# Relative jitters (× mean diagonal) tried in order when a Cholesky factorization fails.
JITTER_SCHEDULE = (0.0, 1e-12, 1e-10, 1e-8, 1e-6)
# A Cholesky pivot² below this × mean diagonal means the matrix is singular to round-off.
_PIVOT_FLOOR = 1e-14


# --------------------------------------------------------------------------------------------
# kernels on D = A ∪ B


def output_kernels(net: MLP, x: np.ndarray | torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """(K^{(L)}, Θ^{(L)}) on the inputs x as float64 (N, N) arrays (book §4.3, §8.2)."""
    xt = validate_inputs(net, x)
    walk = propagate(net, gram(xt), [NTK_MEAN], layers=[net.depth])
    return walk.states[-1].K.numpy(), walk.states[-1].Theta.numpy()


def output_kernel(net: MLP, x: np.ndarray | torch.Tensor) -> np.ndarray:
    """K^{(L)} alone (book §4.3)."""
    xt = validate_inputs(net, x)
    return propagate(net, gram(xt), [KERNEL], layers=[net.depth]).states[-1].K.numpy()


# Working memory of the blocked train × test walk (the arrays returned come on top).
PREDICT_MAX_MEMORY = 256 * 2**20


def output_cross(
    net: MLP, x_a: np.ndarray, x_b: np.ndarray, ntk: bool
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """The output layer's fields between train inputs x_a and test inputs x_b, (n_a, n_b)
    each, and on the test inputs' diagonal, (n_b,) each: ``K`` (and ``Theta`` if ``ntk``).

    All a prediction with standard deviations needs: the pair map is entrywise given the
    variances, so the test inputs are walked through the layers in blocks
    (:func:`pdlt.theory.layers.propagate_cross`) and nothing of size n_b² or L·n_a·n_b is
    ever formed."""
    recursion = [NTK_MEAN if ntk else KERNEL]
    xa, xb = validate_inputs(net, x_a), validate_inputs(net, x_b)
    diag_b = propagate_diagonal(net, xb, recursion)
    walk = propagate_cross(
        net, xa, xb, recursion, layers=[net.depth], max_memory=PREDICT_MAX_MEMORY, diag_b=diag_b
    )
    cross = {k: v.numpy() for k, v in walk.states[-1].values.items()}
    return cross, {k: v.numpy() for k, v in diag_b.states[-1].values.items()}


def output_variance(net: MLP, x: np.ndarray) -> np.ndarray:
    """K^{(L)}_{αα} alone, from 1-D expectations (book §4.3)."""
    diag = propagate_diagonal(net, validate_inputs(net, x), [KERNEL])
    return diag.states[-1].K.numpy()


# --------------------------------------------------------------------------------------------
# linear algebra


def cholesky_with_jitter(A: np.ndarray, what: str) -> tuple[np.ndarray, float]:
    """Lower Cholesky factor of a symmetric matrix, adding ``jitter × mean(diag A)`` from
    :data:`JITTER_SCHEDULE` when needed. Returns ``(L, jitter_added)``; warns when jitter > 0."""
    if not np.all(np.isfinite(A)):
        raise ValueError(f"{what} contains NaN or inf; check the network's C_W, C_b and depth")
    scale = float(np.mean(np.abs(np.diag(A)))) or 1.0
    for rel in JITTER_SCHEDULE:
        jitter = rel * scale
        try:
            L = scipy.linalg.cholesky(A + jitter * np.eye(A.shape[0]), lower=True)
        except np.linalg.LinAlgError:
            continue
        if np.min(np.diag(L)) ** 2 <= _PIVOT_FLOOR * scale:
            continue  # factorized, but singular to round-off: results would be noise
        if jitter > 0:
            warnings.warn(
                f"{what} is not numerically positive definite; added jitter {jitter:.3g} "
                f"(= {rel:g} × mean diagonal) to its diagonal",
                RuntimeWarning,
                stacklevel=3,
            )
        return L, jitter
    raise ValueError(
        f"{what} is not positive definite even with jitter {JITTER_SCHEDULE[-1]:g} × mean "
        "diagonal: remove duplicate training inputs, or increase the noise"
    )


def _cho_solve(L: np.ndarray, B: np.ndarray) -> np.ndarray:
    """A^{-1} B from the lower Cholesky factor of A (two triangular solves)."""
    return scipy.linalg.cho_solve((L, True), B)


def _clip_variance(var: np.ndarray) -> np.ndarray:
    """Round-off can make a posterior variance slightly negative: clip to 0, warning if it was
    more than round-off (sklearn's habit)."""
    if np.any(var < 0):
        worst = float(var.min())
        if worst < -1e-8 * max(1.0, float(np.abs(var).max())):
            warnings.warn(
                f"predicted variances down to {worst:.3g} < 0 (round-off); set to 0",
                RuntimeWarning,
                stacklevel=3,
            )
        var = np.maximum(var, 0.0)
    return var


# --------------------------------------------------------------------------------------------
# the equations


def nngp_posterior(
    K_AA: np.ndarray,
    K_BA: np.ndarray,
    K_BB: np.ndarray,
    y: np.ndarray,
    noise: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Bayesian posterior of an infinite-width network (book §6.3.1; noise ε² = ``noise``):

        m_B = K_BA (K̃ + ε²)^{-1} y,     𝕂_BB = K_BB − K_BA (K̃ + ε²)^{-1} K_AB.

    ``y`` is (N_A, n_out); returns the mean (N_B, n_out) and the covariance (N_B, N_B), shared by
    every output.
    """
    L, _ = cholesky_with_jitter(K_AA + noise * np.eye(K_AA.shape[0]), "the training kernel K̃ + ε²")
    alpha = _cho_solve(L, y)  # (K̃ + ε²)^{-1} y
    V = scipy.linalg.solve_triangular(L, K_BA.T, lower=True)  # L^{-1} K_AB
    return K_BA @ alpha, K_BB - V.T @ V


def log_evidence_from_kernel(K_AA: np.ndarray, y: np.ndarray, noise: float) -> float:
    """log p(y_A | H) for a Gaussian prior N(0, K̃ + ε²) on each of the n_out outputs (book §6.3.2):

    −½ Σ_i y_iᵀ (K̃ + ε²)^{-1} y_i − (n_out/2) log det 2π(K̃ + ε²).
    """
    N, n_out = y.shape
    L, _ = cholesky_with_jitter(K_AA + noise * np.eye(N), "the training kernel K̃ + ε²")
    alpha = _cho_solve(L, y)
    fit = -0.5 * float(np.sum(y * alpha))
    logdet = 2.0 * float(np.sum(np.log(np.diag(L))))
    return fit - 0.5 * n_out * (logdet + N * math.log(2 * math.pi))


def _training_projector(
    Theta_AA: np.ndarray, learning_rate: float | None, steps: int | None, time: float
) -> tuple[np.ndarray, float]:
    """M(t) with T(t) = Θ_BA M(t) (book §10.2.2–10.2.4), and the step size used.

    * ``steps``: discrete GD, M = Θ̃^{-1}[1 − (1 − ηΘ̃)^steps] (η defaults to 1/λ_max(Θ̃));
      ``steps = math.inf``: its limit Θ̃^{-1}, which needs ηλ_max(Θ̃) < 2;
    * else gradient flow for ``time`` (in units of 1/η), M = Θ̃^{-1}[1 − e^{−η·time·Θ̃}];
    * ``time = inf``: M = Θ̃^{-1}, by Cholesky.

    Finite times use the eigendecomposition Θ̃ = U diag(λ) Uᵀ, where each factor
    (1 − (1 − ηλ)^t)/λ stays finite as λ → 0 (it tends to ηt).
    """
    if steps is None and math.isinf(time):
        L, _ = cholesky_with_jitter(Theta_AA, "the training NTK Θ̃")
        eta = float("nan") if learning_rate is None else float(learning_rate)
        return _cho_solve(L, np.eye(Theta_AA.shape[0])), eta
    lam, U = np.linalg.eigh(Theta_AA)
    lam_max = float(lam.max())
    if lam_max <= 0:
        raise ValueError("the training NTK Θ̃ has no positive eigenvalue; nothing can be learned")
    lam = np.clip(lam, 0.0, None)
    if steps is not None:
        eta = 1.0 / lam_max if learning_rate is None else float(learning_rate)
        if math.isinf(steps):
            if eta * lam_max >= 2.0 or lam.min() <= 0:
                raise ValueError(
                    f"steps=inf needs gradient descent to converge on every mode, 0 < ηλ < 2 "
                    f"for the eigenvalues λ of Θ̃; got ηλ in [{eta * lam.min():.3g}, "
                    f"{eta * lam_max:.3g}]"
                )
            return (U / lam) @ U.T, eta
        if eta * lam_max >= 2.0:
            warnings.warn(
                f"η λ_max(Θ̃) = {eta * lam_max:.3g} ≥ 2: gradient descent diverges on the top "
                "mode and the predictions grow like |1 − ηλ_max|^steps",
                RuntimeWarning,
                stacklevel=3,
            )
        with np.errstate(over="ignore"):
            power = np.power(1.0 - eta * lam, int(steps))  # (1 − ηλ)^t; overflow caught below
        gain = np.where(lam > 0, (1.0 - power) / np.where(lam > 0, lam, 1.0), eta * steps)
    else:
        eta = 1.0 if learning_rate is None else float(learning_rate)
        s = eta * time
        gain = np.where(lam > 0, -np.expm1(-s * lam) / np.where(lam > 0, lam, 1.0), s)
    if not np.all(np.isfinite(gain)):
        raise ValueError(
            "the kernel prediction overflowed: η λ_max(Θ̃) ≥ 2 and too many steps; lower the "
            "learning rate"
        )
    return (U * gain) @ U.T, eta


def kernel_prediction(
    Theta_AA: np.ndarray,
    Theta_BA: np.ndarray,
    K_AA: np.ndarray,
    K_BA: np.ndarray,
    K_BB: np.ndarray,
    y: np.ndarray,
    *,
    learning_rate: float | None = None,
    steps: int | None = None,
    time: float = math.inf,
) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance over initializations of the infinite-width network trained by MSE
    gradient descent (book §10.2, the "kernel prediction"):

        T = Θ_BA M(t),  m_B = T y,  Σ_BB = K_BB − T K_AB − K_BA Tᵀ + T K_AA Tᵀ,

    with M(t) from :func:`_training_projector` (M(∞) = Θ̃^{-1}). Returns (mean (N_B, n_out),
    covariance (N_B, N_B)).
    """
    M, _ = _training_projector(Theta_AA, learning_rate, steps, time)
    T = Theta_BA @ M
    TK = T @ K_BA.T  # T K_AB
    cov = K_BB - TK - TK.T + T @ K_AA @ T.T
    return T @ y, 0.5 * (cov + cov.T)


# --------------------------------------------------------------------------------------------
# scikit-learn estimators


def _default_net(n_features: int) -> MLP:
    """The regressors' network when none is given: ReLU, depth 3, C_W = 2, C_b = 0.1 (closed-form
    arc-cosine kernels, so it is fast for thousands of inputs)."""
    return MLP("relu", depth=3, width=1, input_dim=n_features, C_W=2.0, C_b=0.1)


class _InfiniteWidthRegressor(RegressorMixin, BaseEstimator):
    """Shared boundary of the NNGP and NTK regressors: validation and the network."""

    _parameter_constraints: dict = {"net": [MLP, None]}

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        tags.target_tags.single_output = True
        tags.requires_fit = False  # predict before fit gives the prior (as sklearn's GPR)
        return tags

    def __sklearn_clone__(self):
        # The network is frozen (immutable), so a clone shares it instead of deep-copying.
        return type(self)(**self.get_params(deep=False))

    def _network(self, n_features: int) -> MLP:
        if self.net is None:
            return _default_net(n_features)
        if self.net.input_dim != n_features:
            raise ValueError(
                f"X has {n_features} features but the network expects input_dim = "
                f"{self.net.input_dim}"
            )
        return self.net

    def _validate_fit(self, X, y) -> tuple[np.ndarray, np.ndarray]:
        self._validate_params()
        X, y = validate_data(self, X, y, multi_output=True, y_numeric=True, dtype=np.float64)
        self._y_1d = y.ndim == 1
        self.net_ = self._network(X.shape[1])
        return X, (y[:, None] if y.ndim == 1 else y).astype(np.float64)

    def _validate_predict(self, X, return_std: bool, return_cov: bool) -> np.ndarray:
        if return_std and return_cov:
            raise RuntimeError("at most one of return_std and return_cov can be requested")
        fitted = hasattr(self, "X_train_")
        if fitted:
            return validate_data(self, X, reset=False, dtype=np.float64)
        self._validate_params()
        return check_array(X, dtype=np.float64)  # the prior: no state is set before fit

    def _output(
        self,
        mean: np.ndarray,
        cov: np.ndarray | None,
        return_std: bool,
        return_cov: bool,
        var: np.ndarray | None = None,
    ):
        """The sklearn return: mean, and the covariance or standard deviation (from ``var``,
        the covariance's diagonal, when only that was computed)."""
        y_1d = getattr(self, "_y_1d", True)
        n_out = mean.shape[1]
        mean_out = mean[:, 0] if y_1d else mean
        if return_cov:
            return mean_out, (cov if y_1d else np.repeat(cov[:, :, None], n_out, axis=2))
        if return_std:
            diag = np.diag(cov).copy() if var is None else np.array(var, dtype=np.float64)
            std = np.sqrt(_clip_variance(diag))
            return mean_out, (std if y_1d else np.repeat(std[:, None], n_out, axis=1))
        return mean_out

    def _prior(self, X: np.ndarray, return_std: bool, return_cov: bool):
        """Before ``fit``: the untrained network, mean 0 and covariance K^{(L)} (its diagonal
        alone, from 1-D expectations, unless the covariance is asked for)."""
        net = self._network(X.shape[1])
        mean = np.zeros((X.shape[0], 1))
        if return_cov:
            return self._output(mean, output_kernel(net, X), False, True)
        if return_std:
            return self._output(mean, None, True, False, var=output_variance(net, X))
        return self._output(mean, None, False, False)


class NNGPRegressor(_InfiniteWidthRegressor):
    """Bayesian inference with an infinite-width network: a Gaussian process with the network's
    output kernel K^{(L)} as prior covariance (book §6.3; Lee et al. 2017, "NNGP").

    Parameters
    ----------
    net:
        The network (:class:`pdlt.MLP`); its activation, depth, C_b, C_W set the kernel and its
        widths are irrelevant (infinite width). ``None``: ReLU, depth 3, C_W = 2, C_b = 0.1,
        with input_dim taken from X.
    noise:
        ε² > 0, the variance of the Gaussian likelihood p(y|z) (the book's noiseless case is
        ε² → 0). Added to the diagonal of K̃.
    finite_width:
        ``False`` (default): the infinite-width Gaussian process. ``True``: the posterior of the
        network at its actual widths through O(1/n) (book §6.4, :mod:`pdlt.theory.bayes`):
        mean with wiring (eqs. 6.87–6.89), joint covariance, evidence and the representation
        shift of every layer (:meth:`representation_shift`). Needs ``net``; y must then have
        ``net.output_dim`` columns.

    Attributes
    ----------
    X_train_, y_train_:
        Training data (float64); ``y_train_`` is (N_A, n_out).
    L_, alpha_:
        Lower Cholesky factor of K̃ + ε², and (K̃ + ε²)^{-1} y.
    log_evidence_:
        log p(y_A | H) (book §6.3.2), also :meth:`log_evidence`.

    Examples
    --------
    >>> net = pdlt.MLP("tanh", depth=5, width=1, input_dim=2)
    >>> gp = pdlt.NNGPRegressor(net, noise=1e-6).fit(X, y)
    >>> mean, std = gp.predict(X_test, return_std=True)
    """

    _parameter_constraints: dict = {
        **_InfiniteWidthRegressor._parameter_constraints,
        "noise": [Interval(numbers.Real, 0, None, closed="neither")],
        "finite_width": ["boolean"],
    }

    def __init__(
        self, net: MLP | None = None, *, noise: float = 1e-10, finite_width: bool = False
    ) -> None:
        self.net = net
        self.noise = noise
        self.finite_width = finite_width

    def fit(self, X, y) -> NNGPRegressor:
        """Condition the prior on (X, y): Cholesky of K̃ + ε² (book §6.3.1)."""
        X, Y = self._validate_fit(X, y)
        if self.finite_width:
            return self._fit_finite_width(X, Y)
        K_AA = output_kernel(self.net_, X)
        self.L_, self.jitter_ = cholesky_with_jitter(
            K_AA + self.noise * np.eye(X.shape[0]), "the training kernel K̃ + ε²"
        )
        self.alpha_ = _cho_solve(self.L_, Y)
        self.X_train_, self.y_train_ = X, Y
        self.log_evidence_ = log_evidence_from_kernel(K_AA, Y, self.noise)
        return self

    def log_evidence(self) -> float:
        """log p(y_A | H) of the fitted data (book §6.3.2)."""
        check_is_fitted(self)
        return self.log_evidence_

    def predict(self, X, return_std: bool = False, return_cov: bool = False):
        """Posterior mean (and std or covariance) at X; before ``fit``, the prior (mean 0, K)."""
        X = self._validate_predict(X, return_std, return_cov)
        if not hasattr(self, "X_train_"):
            if self.finite_width:
                net = self._network(X.shape[1])
                K = self._prior_metric(net, X)
                return self._output(np.zeros((X.shape[0], 1)), K, return_std, return_cov)
            return self._prior(X, return_std, return_cov)
        if self.finite_width:
            return self._predict_finite_width(X, return_std, return_cov)
        if return_cov:
            N_A = self.X_train_.shape[0]
            K = output_kernel(self.net_, np.concatenate([self.X_train_, X]))
            K_AB, K_BB = K[:N_A, N_A:], K[N_A:, N_A:]
        else:  # train × test and the test diagonal only: O(N_A N_B) memory
            cross, diag = output_cross(self.net_, self.X_train_, X, ntk=False)
            K_AB, K_BB = cross["K"], None
        mean = K_AB.T @ self.alpha_  # m_B = K_BA (K̃+ε²)^{-1} y
        if not (return_std or return_cov):
            return self._output(mean, None, False, False)
        V = scipy.linalg.solve_triangular(self.L_, K_AB, lower=True)
        if return_cov:
            return self._output(mean, K_BB - V.T @ V, False, True)  # K_BB − K_BA K̃⁻¹ K_AB
        return self._output(mean, None, True, False, var=diag["K"] - np.einsum("ab,ab->b", V, V))

    # -- finite width (book §6.4) -----------------------------------------------------------

    def _finite_net(self, n_features: int) -> MLP:
        if self.net is None:
            raise ValueError(
                "finite_width=True needs a network with its widths: pass net=pdlt.MLP(...)"
            )
        return self._network(n_features)

    def _prior_metric(self, net: MLP, X: np.ndarray) -> np.ndarray:
        """The finite-width prior covariance G^{(L)} = K + K^{{1}}/n_{L−1} (book §4.3)."""
        from pdlt.theory.vertex import metric

        return metric(self._finite_net(X.shape[1]), X).G[-1]

    def _fit_finite_width(self, X: np.ndarray, Y: np.ndarray) -> NNGPRegressor:
        from pdlt.theory.bayes import finite_width_evidence

        net = self._finite_net(X.shape[1])
        if net.depth < 2:
            raise ValueError("finite_width=True needs a hidden layer (depth ≥ 2)")
        if Y.shape[1] != net.output_dim:
            raise ValueError(
                f"y has {Y.shape[1]} output column(s) but the network has output_dim = "
                f"{net.output_dim}; at finite width the outputs are wired together, so y needs "
                "one column per network output"
            )
        self.X_train_, self.y_train_ = X, Y
        self.log_evidence_ = finite_width_evidence(net, torch.from_numpy(X), Y, self.noise)
        return self

    def _posterior(self, X: np.ndarray):
        from pdlt.theory.bayes import finite_width_posterior

        return finite_width_posterior(
            self.net_,
            torch.from_numpy(self.X_train_),
            self.y_train_,
            torch.from_numpy(X),
            self.noise,
        )

    def _predict_finite_width(self, X: np.ndarray, return_std: bool, return_cov: bool):
        post = self._posterior(X)
        mean = post.mean
        y_1d = self._y_1d
        if return_cov:
            per_output = np.einsum("bici->bci", post.cov)  # (N_B, N_B, n_L), sklearn's layout
            return (mean[:, 0], per_output[:, :, 0]) if y_1d else (mean, per_output)
        if return_std:
            B, n_L = mean.shape
            var = _clip_variance(post.cov.reshape(B * n_L, B * n_L).diagonal().reshape(B, n_L))
            std = np.sqrt(var)
            return (mean[:, 0], std[:, 0]) if y_1d else (mean, std)
        return mean[:, 0] if y_1d else mean

    def predict_joint(self, X):
        """The full finite-width posterior at X (finite_width=True, after fit): a
        :class:`~pdlt.theory.bayes.BayesianPosterior` with the joint covariance over test
        inputs *and* outputs (N_B, n_L, N_B, n_L) — outputs are correlated at finite width —
        the GP parts and the representation shift."""
        check_is_fitted(self)
        if not self.finite_width:
            raise ValueError("predict_joint needs finite_width=True")
        return self._posterior(validate_data(self, X, reset=False, dtype=np.float64))

    def representation_shift(self, layer: int, X=None) -> np.ndarray:
        """E[Ĝ^{(ℓ)} | data] − G^{(ℓ)}, the O(1/n) shift of layer ℓ's metric (book §6.4.3,
        eqs. 6.90–6.92) on the training inputs followed by X (if given): (N_all, N_all).
        Ĝ^{(ℓ)} = C_b + (C_W/n_{ℓ−1}) Σ_j σ(z^{(ℓ−1)}_j)σ(z^{(ℓ−1)}_j) is built from layer
        ℓ−1's activations: ``layer = depth`` is the representation of the last hidden layer,
        ``layer = 1`` is zero (the inputs do not fluctuate)."""
        check_is_fitted(self)
        if not self.finite_width:
            raise ValueError(
                "representation_shift needs finite_width=True: at infinite width hidden "
                "representations do not move (book §6.3.3)"
            )
        from pdlt import _validation

        ell = _validation.integer("layer", layer, min=1, max=self.net_.depth)
        Xb = (
            self.X_train_[:0]
            if X is None
            else validate_data(self, X, reset=False, dtype=np.float64)
        )
        return self._posterior(Xb).shift[ell - 1]


class NTKRegressor(_InfiniteWidthRegressor):
    """The ensemble of infinite-width networks trained by MSE gradient descent (book §10.2, the
    kernel prediction): the mean and covariance over initializations of the trained output.

    Parameters
    ----------
    net:
        The network; K^{(L)} from C_b, C_W and Θ^{(L)} from λ_b, λ_W (book ch. 8). ``None`` as in
        :class:`NNGPRegressor`.
    learning_rate:
        η of gradient descent on the book's loss ½ Σ_α (z_α − y_α)² (summed, not averaged), with
        the book's per-layer rates λ_b, λ_W/n_{ℓ−1} folded into Θ. For ``steps``: default
        1/λ_max(Θ̃). For gradient flow: multiplies ``time`` (default 1).
    steps:
        Number of discrete GD steps; ``math.inf`` for infinitely many (the fully trained
        network of learning rate η: at infinite width the same as ``time = inf``, at finite
        width it depends on η, book §∞.2.3); ``None`` for gradient flow for ``time``.
    time:
        Gradient-flow time (in units of 1/η); ``inf`` (default) is the fully trained network,
        the same for every convergent algorithm (§10.2.4).
    finite_width:
        Predict the ensemble mean and covariance at the net's widths through O(1/n) (book
        §∞.2.2–∞.2.3): the kernel prediction plus the corrections of
        :mod:`pdlt.theory.trained` (the NTK's 1/n mean Θ1, its variance A, B and correlation
        with z(0) D, F, the kernel correction K1, the dNTK P, Q and the ddNTK R, S, T, U).
        Needs ``net`` and ``steps`` (an int, or ``math.inf``); at most 7 training inputs (the
        four-input statistics' cost guard; with ``return_cov`` and many test inputs at most
        6: they go in pairs). The
        covariance is per output (N_B, N_B, n_L), as the infinite-width one; the outputs'
        cross-covariance is in :func:`pdlt.theory.trained.trained_covariance_correction`.

    Attributes
    ----------
    X_train_, y_train_:
        Training data; ``M_`` with T = Θ_BA M the training projector; ``learning_rate_``.
    """

    _parameter_constraints: dict = {
        **_InfiniteWidthRegressor._parameter_constraints,
        "learning_rate": [Interval(numbers.Real, 0, None, closed="neither"), None],
        "steps": [
            Interval(numbers.Integral, 0, None, closed="left"),
            Options(numbers.Real, {math.inf}),
            None,
        ],
        "time": [Interval(numbers.Real, 0, None, closed="both")],
        "finite_width": ["boolean"],
    }

    def __init__(
        self,
        net: MLP | None = None,
        *,
        learning_rate: float | None = None,
        steps: int | None = None,
        time: float = math.inf,
        finite_width: bool = False,
    ) -> None:
        self.net = net
        self.learning_rate = learning_rate
        self.steps = steps
        self.time = time
        self.finite_width = finite_width

    def fit(self, X, y) -> NTKRegressor:
        """Compute Θ̃, K̃ and the training projector M(t) (book §10.2)."""
        X, Y = self._validate_fit(X, y)
        if self.steps is not None and not math.isinf(self.time):
            raise ValueError(
                "give either steps (discrete gradient descent) or time (flow), not both"
            )
        if self.finite_width:
            self._check_finite_width(X, Y)
        K, Theta = output_kernels(self.net_, X)
        self.M_, self.learning_rate_ = _training_projector(
            Theta, self.learning_rate, self.steps, self.time
        )
        self.X_train_, self.y_train_, self.K_train_ = X, Y, K
        return self

    def _check_finite_width(self, X: np.ndarray, Y: np.ndarray) -> None:
        from pdlt.theory.ntk import MAX_FLUCTUATION_INPUTS

        if self.net is None:
            raise ValueError("finite_width=True needs a network with its widths: pass net=...")
        if self.steps is None:
            raise ValueError(
                "finite_width=True needs steps (discrete gradient descent, an int or math.inf "
                "for the fully trained network): the O(1/n) ensemble is derived step by step "
                "(book §∞.2.2); gradient flow is not available"
            )
        if self.net_.depth < 2:
            raise ValueError("finite_width=True needs a hidden layer (depth ≥ 2)")
        if Y.shape[1] != self.net_.output_dim:
            raise ValueError(
                f"y has {Y.shape[1]} output column(s) but the network has output_dim = "
                f"{self.net_.output_dim}; at finite width the outputs are wired together"
            )
        if X.shape[0] >= MAX_FLUCTUATION_INPUTS:
            raise ValueError(
                f"finite_width=True supports at most {MAX_FLUCTUATION_INPUTS - 1} training "
                f"inputs (its four-input statistics cost O(N⁴)), got {X.shape[0]}"
            )

    def _finite_width(self, X: np.ndarray, what: str) -> tuple[np.ndarray, np.ndarray | None]:
        """The O(1/n) coefficients at X from :mod:`pdlt.theory.trained`: the mean's
        (N_B, n_L) and, for ``what`` = "std", the variance's (N_B, n_L), for "cov" the
        covariance's (N_B, n_L, N_B, n_L) (else None). Test inputs go in blocks that fit the
        four-input statistics (:data:`pdlt.theory.ntk.MAX_FLUCTUATION_INPUTS` inputs, a cost
        guard: they take O(N⁴) cubatures, ~1 min at 8 inputs). For "cov" with more test inputs
        than one block holds, every pair of test inputs is a block of its own: the O(1/n)
        terms of Cov[z_β1, z_β2] involve the statistics of A ∪ {β1, β2} alone."""
        from pdlt.theory.ntk import MAX_FLUCTUATION_INPUTS
        from pdlt.theory.trained import trained_covariance_correction, trained_mean_correction

        XA, N_A, n_L = self.X_train_, self.X_train_.shape[0], self.net_.output_dim
        # a test input equal to a training input takes that input's correction: the
        # statistics need distinct inputs
        same = np.all(X[:, None, :] == XA[None, :, :], axis=2)  # (N_B, N_A)
        hit = same.any(axis=1)
        new = np.flatnonzero(~hit)
        block = MAX_FLUCTUATION_INPUTS - N_A
        if what == "cov" and new.size > block:
            return self._pairwise_covariance(X, same, new)
        c = np.empty((X.shape[0], n_L))
        var = np.empty((X.shape[0], n_L)) if what == "std" else None
        cov = None
        args = (self.net_, XA, self.y_train_)
        rate = (self.learning_rate_, self.steps)
        for k in range(0, max(new.size, 1), block):
            rows = new[k : k + block]
            if what == "mean":
                part = trained_mean_correction(*args, X[rows], *rate)
            else:
                part, full = trained_covariance_correction(*args, X[rows], *rate, return_mean=True)
            c[rows] = part[N_A:]
            c_train = part[:N_A]
            if what == "std":
                d = np.einsum("aiai->ai", full)
                var[rows] = d[N_A:]
                var_train = d[:N_A]
            elif what == "cov":
                # each test input's slot in [training inputs, new test inputs]
                slot = np.empty(X.shape[0], dtype=int)
                slot[new] = N_A + np.arange(new.size)
                slot[hit] = np.argmax(same[hit], axis=1)
                cov = full[np.ix_(slot, range(n_L), slot, range(n_L))]
        c[hit] = c_train[np.argmax(same[hit], axis=1)]
        if var is not None:
            var[hit] = var_train[np.argmax(same[hit], axis=1)]
        return c, (var if what == "std" else cov)

    def _pairwise_covariance(
        self, X: np.ndarray, same: np.ndarray, new: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`_finite_width` for "cov", one block per pair of new test inputs."""
        from pdlt.theory.ntk import MAX_FLUCTUATION_INPUTS
        from pdlt.theory.trained import trained_covariance_correction

        XA, N_A, n_L = self.X_train_, self.X_train_.shape[0], self.net_.output_dim
        if N_A + 2 > MAX_FLUCTUATION_INPUTS:
            raise ValueError(
                f"finite_width=True with return_cov=True and {N_A} training inputs supports one "
                f"test input distinct from them (the four-input statistics take at most "
                f"{MAX_FLUCTUATION_INPUTS} inputs), got {new.size}; use return_std=True"
            )
        m = N_A + new.size
        full = np.zeros((m, n_L, m, n_L))
        c_all = np.zeros((m, n_L))
        every = range(n_L)
        for i in range(new.size):
            for j in range(i + 1, new.size):
                part, f = trained_covariance_correction(
                    self.net_, XA, self.y_train_, X[new[[i, j]]], self.learning_rate_,
                    self.steps, return_mean=True,
                )  # fmt: skip
                idx = [*range(N_A), N_A + i, N_A + j]
                full[np.ix_(idx, every, idx, every)] = f
                c_all[idx] = part
        hit = same.any(axis=1)
        slot = np.empty(X.shape[0], dtype=int)
        slot[new] = N_A + np.arange(new.size)
        slot[hit] = np.argmax(same[hit], axis=1)
        return c_all[slot], full[np.ix_(slot, every, slot, every)]

    def predict(self, X, return_std: bool = False, return_cov: bool = False):
        """Ensemble mean (and std or covariance over initializations) of the trained network at
        X; before ``fit``, the untrained network (mean 0, covariance K)."""
        X = self._validate_predict(X, return_std, return_cov)
        if not hasattr(self, "X_train_"):
            return self._prior(X, return_std, return_cov)
        if self.finite_width:
            return self._predict_finite_width(X, return_std, return_cov)
        mean, cov, var = self._kernel_prediction(X, return_std, return_cov)
        return self._output(mean, cov, return_std, return_cov, var=var)

    def _kernel_prediction(self, X: np.ndarray, return_std: bool, return_cov: bool):
        """The infinite-width mean (N_B, n_out), covariance Σ_BB(t) (if ``return_cov``) and
        variance diag Σ_BB(t) (if ``return_std``) of the trained ensemble (book §10.2.4)."""
        N_A = self.X_train_.shape[0]
        K_AA = self.K_train_
        if return_cov:
            K, Theta = output_kernels(self.net_, np.concatenate([self.X_train_, X]))
            T = Theta[N_A:, :N_A] @ self.M_
            TK = T @ K[N_A:, :N_A].T
            cov = K[N_A:, N_A:] - TK - TK.T + T @ K_AA @ T.T  # book §10.2.4, Σ^∞ with T(t)
            return T @ self.y_train_, 0.5 * (cov + cov.T), None
        # train × test and the test diagonal only: O(N_A N_B) memory
        cross, diag = output_cross(self.net_, self.X_train_, X, ntk=True)
        T = cross["Theta"].T @ self.M_
        if not return_std:
            return T @ self.y_train_, None, None
        # diag of K_BB − T K_AB − K_BA Tᵀ + T K_AA Tᵀ
        var = (
            diag["K"]
            - 2 * np.einsum("ba,ab->b", T, cross["K"])
            + np.einsum("ba,ba->b", T @ K_AA, T)
        )
        return T @ self.y_train_, None, var

    def _predict_finite_width(self, X: np.ndarray, return_std: bool, return_cov: bool):
        """Kernel prediction + (1/n_{L−1})·(the O(1/n) coefficients): mean, and the per-output
        std (N_B, n_L) or covariance (N_B, N_B, n_L)."""
        mean, cov, var = self._kernel_prediction(X, return_std, return_cov)
        what = "cov" if return_cov else "std" if return_std else "mean"
        c, second = self._finite_width(X, what)
        n = self.net_.widths[-2]
        mean = mean + c / n
        y_1d = self._y_1d
        mean_out = mean[:, 0] if y_1d else mean
        if return_cov:
            per_output = cov[:, :, None] + np.einsum("aibi->abi", second) / n
            return mean_out, (per_output[:, :, 0] if y_1d else per_output)
        if return_std:
            std = np.sqrt(_clip_variance(var[:, None] + second / n))
            return mean_out, (std[:, 0] if y_1d else std)
        return mean_out


# --------------------------------------------------------------------------------------------
# evidence and generalization


def _targets(y: object, n: int, what: str) -> np.ndarray:
    arr = np.asarray(y, dtype=np.float64)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2 or arr.shape[0] != n:
        raise ValueError(f"{what} must have shape ({n},) or ({n}, n_out), got {np.shape(y)}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{what} contains NaN or inf; targets must be finite")
    return arr


def _positive(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not value > 0:
        raise ValueError(f"{name} must be a positive float, got {value!r}")
    return float(value)


def log_evidence(net: MLP, X: np.ndarray, y: np.ndarray, *, noise: float = 1e-10) -> float:
    """log p(y | X, H) of the infinite-width network ``net`` as a Bayesian model (book §6.3.2).

    Comparing it across hyperparameters (C_W, C_b, depth) is the book's Bayesian model
    comparison; deep networks away from criticality are exponentially penalized ("the evidence
    for criticality", §6.3.2).
    """
    noise = _positive("noise", noise)
    x = validate_inputs(net, X)
    Y = _targets(y, x.shape[0], "y")
    return log_evidence_from_kernel(output_kernel(net, x), Y, noise)


@dataclass(frozen=True)
class BiasVariance:
    """Generalization error of the kernel prediction on a test set (book §10.3).

    Attributes
    ----------
    mean, variance:
        Ensemble mean m_β̇ (N_B, n_out) and variance Σ_β̇β̇ (N_B,) of the trained output.
    bias2:
        (m_β̇ − y_β̇)² summed over outputs, (N_B,).
    y_test:
        The test targets (N_B, n_out).
    """

    mean: np.ndarray
    variance: np.ndarray
    bias2: np.ndarray
    y_test: np.ndarray

    @property
    def error(self) -> np.ndarray:
        """E[(z − y)²] = bias² + n_out·variance per test input."""
        return self.bias2 + self.y_test.shape[1] * self.variance

    def totals(self) -> dict[str, float]:
        """Test-set averages of bias², variance (per output summed) and their sum."""
        n_out = self.y_test.shape[1]
        return {
            "bias2": float(self.bias2.mean()),
            "variance": float(n_out * self.variance.mean()),
            "error": float(self.error.mean()),
        }

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame(
            {
                "test_input": np.arange(self.bias2.size),
                "bias2": self.bias2,
                "variance": self.variance,
                "error": self.error,
            }
        )


def bias_variance(
    net: MLP,
    X_train: np.ndarray,
    y_train: np.ndarray,
    X_test: np.ndarray,
    y_test: np.ndarray,
    **training: object,
) -> BiasVariance:
    """Bias² and variance of the kernel prediction at each test input (book §10.3):
    E[(z_β̇(T) − y_β̇)²] = (m_β̇ − y_β̇)² + Σ_β̇β̇. ``training`` is passed to :class:`NTKRegressor`
    (learning_rate, steps, time); scan C_W, C_b or depth with ``net.with_(...)``."""
    model = NTKRegressor(net, **training).fit(X_train, y_train)
    mean, cov = model.predict(X_test, return_cov=True)
    mean = mean[:, None] if mean.ndim == 1 else mean
    cov = cov if cov.ndim == 2 else cov[:, :, 0]
    Y = _targets(y_test, mean.shape[0], "y_test")
    if Y.shape[1] != mean.shape[1]:
        raise ValueError(f"y_test has {Y.shape[1]} outputs but y_train has {mean.shape[1]}")
    var = _clip_variance(np.diag(cov).copy())
    return BiasVariance(mean=mean, variance=var, bias2=np.sum((mean - Y) ** 2, axis=1), y_test=Y)


__all__ = [
    "BiasVariance",
    "NNGPRegressor",
    "NTKRegressor",
    "bias_variance",
    "cholesky_with_jitter",
    "kernel_prediction",
    "log_evidence",
    "nngp_posterior",
    "output_kernels",
]
