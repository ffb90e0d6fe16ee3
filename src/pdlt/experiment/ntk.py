"""Empirical NTKs of real networks from their layer structure, and their ensemble statistics.

The NTK of layer ℓ with the book's learning rates (λ_b for biases, λ_W/n_{ℓ'−1} for the weights
of layer ℓ') is a sum over the layers ℓ' ≤ ℓ of *forward activations × backpropagated signals*
(book eq. 8.x unrolled; ``shared/theory/02-ntk.md`` §7):

    Ĥ^{(ℓ)}_{i1i2;δ1δ2} = Σ_{ℓ'=1}^{ℓ} [λ_b^{(ℓ')} + λ_W^{(ℓ')} h^{(ℓ'−1)}_{δ1}·h^{(ℓ'−1)}_{δ2} / n_{ℓ'−1}]
                           Σ_k J^{(ℓ,ℓ')}_{i1k;δ1} J^{(ℓ,ℓ')}_{i2k;δ2},

with h^{(0)} = x, h^{(ℓ')} = σ(z^{(ℓ')}) and J^{(ℓ,ℓ')}_{ik;δ} = ∂z^{(ℓ)}_{i;δ}/∂z^{(ℓ')}_{k;δ}, obtained
by backpropagating unit vectors: J^{(ℓ,ℓ'−1)} = J^{(ℓ,ℓ')} W^{(ℓ')} diag σ'(z^{(ℓ'−1)}). No
parameter Jacobian is ever built: each layer costs one batched matmul per step, for all
networks of a chunk at once, and the result is the NTK of a chosen set of neurons.

Estimators registered in :data:`pdlt.experiment.measure.ESTIMATORS`:

``"Theta"``
    ``Theta``: E[Ĥ_{ii;δ1δ2}] per layer (the frozen NTK Θ up to O(1/n)).
``"ntk_fluctuations"``
    ``Theta`` and the O(1/n) statistics in the book's index structure (02-ntk.md §3.1), each
    multiplied by n_{ℓ−1}; i ≠ j are distinct neurons of layer ℓ:
    ``A[a,b,c,d]`` = n Cov(Ĥ_{ii;ab}, Ĥ_{jj;cd}); ``B[a,b,c,d]`` = n E[Ĥ_{ij;ac} Ĥ_{ij;bd}];
    ``D[a,b,c,d]`` = n Cov(Ĥ_{ii;ab}, z_{j;c} z_{j;d}); ``F[a,b,c,d]`` = n E[Ĥ_{ij;ac} z_{i;b} z_{j;d}].
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from pdlt import _validation
from pdlt._threads import walk_threads
from pdlt.experiment.ensemble import (
    DEFAULT_MAX_MEMORY,
    Chunk,
    check_ensemble_args,
    chunk_entries,
    forward_chunks,
    resolve_device,
    resolve_dtype,
)
from pdlt.experiment.measure import RunningMoments
from pdlt.network import MLP, validate_inputs

Tensor = torch.Tensor

NEURONS = 8  # neurons per layer whose NTK the estimators measure (all of them if fewer)


# --------------------------------------------------------------------------------------------
# the structured empirical NTK


def check_layer(net: MLP, layer: int | None) -> int:
    if layer is None:
        return net.depth
    if isinstance(layer, bool) or not isinstance(layer, (int, np.integer)):
        raise TypeError(f"layer must be an int in 1..{net.depth}, got {layer!r}")
    if not 1 <= layer <= net.depth:
        raise ValueError(f"layer must be in 1..{net.depth} (the network's depth), got {layer}")
    return int(layer)


def check_neurons(net: MLP, layer: int, neurons: Sequence[int] | int | None) -> list[int]:
    n = net.widths[layer]
    if neurons is None:
        return list(range(n))
    if isinstance(neurons, (int, np.integer)) and not isinstance(neurons, bool):
        if not 1 <= neurons <= n:
            raise ValueError(f"neurons as a count must be in 1..{n} (width of layer {layer})")
        return list(range(int(neurons)))
    idx = [int(i) for i in neurons]
    if not idx or any(not 0 <= i < n for i in idx):
        raise ValueError(
            f"neurons must be indices in 0..{n - 1} (width of layer {layer}), got {idx}"
        )
    return idx


def _layer_coefficient(net: MLP, h: Tensor, ell: int) -> Tensor:
    """λ_b^{(ℓ)} + λ_W^{(ℓ)} h^{(ℓ−1)}_{δ1}·h^{(ℓ−1)}_{δ2}/n_{ℓ−1}: (B, N, N) (or (N, N) for x)."""
    gram = h.transpose(-1, -2) @ h / h.shape[-2]
    return net.lambda_b[ell - 1] + net.lambda_W[ell - 1] * gram


def chunk_ntk(
    net: MLP,
    chunk: Chunk,
    layer: int | None = None,
    neurons: Sequence[int] | int | None = None,
    *,
    contributions: bool = False,
) -> Tensor:
    """The NTK of layer ``layer`` for every network of a chunk, from its layer structure.

    Parameters
    ----------
    net, chunk:
        The spec and a chunk of sampled networks from :func:`~pdlt.experiment.ensemble.forward_chunks`.
    layer:
        ℓ in 1..L (default L, the output).
    neurons:
        Indices of the layer-ℓ neurons (or a count: the first ``neurons``); default all.
    contributions:
        Also split Ĥ^{(ℓ)} into the contributions of the parameters of each layer ℓ' ≤ ℓ.

    Returns
    -------
    Tensor
        (B, k, k, N, N) indexed [network, i1, i2, δ1, δ2], in the chunk's dtype; with
        ``contributions=True`` (B, ℓ, k, k, N, N), whose sum over axis 1 is the NTK.
    """
    ell = check_layer(net, layer)
    idx = check_neurons(net, ell, neurons)
    B, N, k = chunk.size, chunk.x.shape[1], len(idx)
    dev, dt = chunk.x.device, chunk.x.dtype
    rows = torch.as_tensor(idx, device=dev)
    parts: list[Tensor] = []
    eye = torch.eye(k, dtype=dt, device=dev)[None, :, :, None, None]
    g: Tensor | None = None  # J^{(ℓ,ℓ')} as (B, k, N, n_ℓ'): network, output neuron, input, neuron
    for lp in range(ell, 0, -1):
        h = chunk.x if lp == 1 else net.activation(chunk.z[lp - 2])  # h^{(ℓ'−1)}: (.., n, N)
        coef = _layer_coefficient(net, h, lp)
        coef = coef.expand(B, N, N) if coef.ndim == 2 else coef
        if g is None:  # ℓ' = ℓ: J = identity on the chosen neurons
            parts.append(coef[:, None, None, :, :] * eye)
        else:
            flat = g.reshape(B, k * N, -1)
            gram = torch.bmm(flat, flat.transpose(1, 2)).view(B, k, N, k, N).permute(0, 1, 3, 2, 4)
            parts.append(coef[:, None, None, :, :] * gram)
        if lp > 1:
            W = chunk.W[lp - 1]  # (B, n_ℓ', n_{ℓ'−1})
            dsig = net.activation.d1(chunk.z[lp - 2]).transpose(1, 2)  # (B, N, n_{ℓ'−1})
            if g is None:
                back = W[:, rows, None, :].expand(B, k, N, W.shape[2])
            else:
                back = torch.bmm(g.reshape(B, k * N, -1), W).view(B, k, N, -1)
            g_next = back * dsig[:, None, :, :]
            gamma = net.skip[lp - 1]
            if gamma != 0.0:  # residual: dz^{(ℓ')}/dz^{(ℓ'−1)} = W σ' + γ·1 (eq. B.3)
                if g is None:
                    one = torch.zeros((k, W.shape[2]), dtype=dt, device=dev)
                    one[torch.arange(k), rows] = 1.0
                    g_next = g_next + gamma * one[None, :, None, :]
                else:
                    g_next = g_next + gamma * g
            g = g_next
    if contributions:
        return torch.stack(parts[::-1], dim=1)
    return torch.stack(parts).sum(dim=0)


@dataclass(frozen=True, eq=False)
class EmpiricalNTK:
    """The NTKs of an ensemble of sampled networks.

    Attributes
    ----------
    H:
        (M, k, k, N, N) tensor: network, neuron i1, neuron i2, input δ1, input δ2.
    contributions:
        (M, ℓ, k, k, N, N): the part of H from the parameters of each layer, or None.
    layer, neurons:
        Which layer's NTK, and which of its neurons.
    net, x, seed:
        Spec, inputs (N, n_0) and the seed of the ensemble.
    """

    H: Tensor
    contributions: Tensor | None
    layer: int
    neurons: tuple[int, ...]
    net: MLP
    x: np.ndarray
    seed: int

    def __repr__(self) -> str:
        M, k, _, N, _ = self.H.shape
        return f"EmpiricalNTK(networks={M}, layer={self.layer}, neurons={k}, inputs={N})"


def check_finite_networks(values: Tensor, start: int, what: str) -> None:
    """Raise, naming the first network, if per-network ``values`` (network axis first) of the
    networks ``start``, ``start + 1``, … are not all finite (as :func:`pdlt.measure` does)."""
    if not bool(torch.isfinite(values).all()):
        first = start + int((~torch.isfinite(values)).flatten(1).any(1).nonzero()[0, 0])
        dt = str(values.dtype).removeprefix("torch.")
        raise FloatingPointError(
            f"the {what} of network {first} is not finite: the sampled networks overflowed in "
            f"{dt}; use dtype='float64', a smaller C_W or fewer layers"
        )


def empirical_ntk(
    net: MLP,
    x: np.ndarray | Tensor,
    n_networks: int = 1,
    seed: int = 0,
    *,
    layer: int | None = None,
    neurons: Sequence[int] | int | None = None,
    contributions: bool = False,
    dtype: torch.dtype | str = torch.float32,
    device: str | torch.device = "cpu",
    max_memory: int = DEFAULT_MAX_MEMORY,
) -> EmpiricalNTK:
    """NTKs Ĥ^{(ℓ)}_{i1i2;δ1δ2} of ``n_networks`` sampled networks, by the layer structure.

    The networks are the ones :func:`pdlt.measure` draws for the same ``seed`` (network m is the
    same whatever ``n_networks`` and ``max_memory``); the learning
    rates are the network's λ_b, λ_W in the book's convention (weights: λ_W/n_{ℓ−1}).

    Examples
    --------
    >>> e = pdlt.empirical_ntk(net, x, n_networks=100, seed=0)
    >>> e.H.shape                  # (networks, n_L, n_L, N, N)

    Raises
    ------
    FloatingPointError
        If a network's NTK overflows (as :func:`pdlt.measure` does for its statistics).
    """
    xt = validate_inputs(net, x)
    n_networks = _validation.integer("n_networks", n_networks, min=1)
    check_ensemble_args(max(n_networks, 2), seed, max_memory)
    ell = check_layer(net, layer)
    idx = check_neurons(net, ell, neurons)
    dt, dev = resolve_dtype(dtype), resolve_device(device)
    Hs, Cs = [], []
    with walk_threads(chunk_entries(net, xt.shape[0], n_networks, dt, max_memory)):
        for chunk in forward_chunks(
            net, xt, n_networks, seed, dtype=dt, device=dev, max_memory=max_memory
        ):
            out = chunk_ntk(net, chunk, ell, idx, contributions=contributions)
            check_finite_networks(out, chunk.start, "empirical NTK")
            if contributions:
                Cs.append(out)
                Hs.append(out.sum(dim=1))
            else:
                Hs.append(out)
    return EmpiricalNTK(
        H=torch.cat(Hs),
        contributions=torch.cat(Cs) if contributions else None,
        layer=ell,
        neurons=tuple(idx),
        net=net,
        x=xt.numpy(),
        seed=int(seed),
    )


# --------------------------------------------------------------------------------------------
# estimators


def _layer_ntks(net: MLP, chunk: Chunk, neurons: int) -> list[Tensor]:
    """float64 NTK blocks (B, k, k, N, N) of the first min(n_ℓ, neurons) neurons of every layer."""
    return [
        chunk_ntk(net, chunk, ell, min(net.widths[ell], neurons)).to(torch.float64)
        for ell in range(1, net.depth + 1)
    ]


def _diagonal(H: Tensor) -> Tensor:
    """Ĥ_{ii;δ1δ2}: (B, k, k, N, N) → (B, k, N, N)."""
    return torch.diagonal(H, dim1=1, dim2=2).permute(0, 3, 1, 2)


class ThetaEstimator:
    """``Theta``: E[Ĥ^{(ℓ)}_{ii;δ1δ2}] per layer, averaged over ``neurons`` neurons per network."""

    def __init__(self, net: MLP, x: Tensor, neurons: int = NEURONS) -> None:
        self.net, self.neurons = net, int(neurons)
        self._moments = RunningMoments()

    def update(self, chunk: Chunk) -> None:
        Hs = _layer_ntks(self.net, chunk, self.neurons)
        self._moments.update(torch.stack([_diagonal(H).mean(dim=1) for H in Hs], dim=1))

    def result(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        return {"Theta": self._moments.result()}


class NTKFluctuationEstimator:
    """``Theta``, ``A``, ``B``, ``D``, ``F`` per layer, with standard errors across networks.

    Per network, with i ≠ j over ``neurons`` neurons of layer ℓ (and j over *all* neurons for
    the preactivation factor of D), the sample moments below are formed; A and D are covariances
    E[XY] − E[X]E[Y] across the ensemble, so their errors come from the delta method on the
    per-network samples (kept in memory: 2·L·N⁴ floats per network). B and F need no
    subtraction (E[Ĥ_ij] = 0 for i ≠ j by the sign symmetry of each neuron's incoming weights).
    Layer 1 is deterministic (eq. 8.23): its A, B, D, F are exactly 0 with error 0.
    """

    def __init__(self, net: MLP, x: Tensor, neurons: int = NEURONS) -> None:
        small = [ell for ell in range(2, net.depth + 1) if net.widths[ell] < 2]
        if small:
            raise ValueError(
                "the NTK fluctuation statistics B, F (and A, D) need two distinct neurons in every "
                f"layer, but layer(s) {small} have width 1; use output_dim ≥ 2 (the statistics of "
                "layer L do not depend on n_L)"
            )
        if neurons < 2:
            raise ValueError(f"neurons must be ≥ 2 for cross-neuron statistics, got {neurons}")
        self.net, self.neurons = net, int(neurons)
        self._BF = RunningMoments()
        self._samples: dict[str, list[Tensor]] = {"b": [], "k": [], "a": [], "d": []}

    def update(self, chunk: Chunk) -> None:
        Hs = _layer_ntks(self.net, chunk, self.neurons)
        b, kk, a, d, BF = [], [], [], [], []
        for ell, H in enumerate(Hs, start=1):
            z = chunk.z[ell - 1].to(torch.float64)[:, : H.shape[1]]  # (B, k, N) chosen neurons
            zall = chunk.z[ell - 1].to(torch.float64)
            n_l, k = zall.shape[1], H.shape[1]
            Hd = _diagonal(H)  # (B, k, N, N)
            zz = z[:, :, :, None] * z[:, :, None, :]  # (B, k, N, N)
            T = torch.einsum("mjp,mjq->mpq", zall, zall)  # Σ_j z_j z_j over all neurons
            b.append(Hd.mean(dim=1))
            kk.append(T / n_l)
            S = Hd.sum(dim=1)
            a.append(
                (torch.einsum("mpq,mrs->mpqrs", S, S) - torch.einsum("mipq,mirs->mpqrs", Hd, Hd))
                / (k * (k - 1))
            )
            # mean over i in the chosen set, j over all other neurons of the layer
            others = T[:, None] - zz
            d.append(torch.einsum("mipq,mirs->mpqrs", Hd, others) / (k * (n_l - 1)))
            pairs = k * (k - 1)
            Bm = torch.einsum("mijpr,mijqs->mpqrs", H, H) - torch.einsum("miipr,miiqs->mpqrs", H, H)
            Fm = torch.einsum("mijpr,miq,mjs->mpqrs", H, z, z) - torch.einsum(
                "miipr,miq,mis->mpqrs", H, z, z
            )
            BF.append(torch.stack([Bm, Fm], dim=1) / pairs)
        self._samples["b"].append(torch.stack(b, 1).cpu())
        self._samples["k"].append(torch.stack(kk, 1).cpu())
        self._samples["a"].append(torch.stack(a, 1).cpu())
        self._samples["d"].append(torch.stack(d, 1).cpu())
        self._BF.update(torch.stack(BF, 2))  # (B, 2, L, N, N, N, N)

    def result(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        s = {key: torch.cat(v) for key, v in self._samples.items()}
        M = s["b"].shape[0]
        if M < 2:
            raise ValueError("need at least two networks for a mean with an error bar")
        n = torch.as_tensor(self.net.widths[:-1], dtype=torch.float64)  # n_{ℓ−1}, ℓ = 1..L
        scale4 = n[:, None, None, None, None]
        b_bar, k_bar = s["b"].mean(0), s["k"].mean(0)

        def cov(xy: Tensor, x: Tensor, x_bar: Tensor, y: Tensor, y_bar: Tensor) -> tuple:
            # E[XY] − E[X]E[Y] and its delta-method standard error (influence function).
            outer = torch.einsum("lpq,lrs->lpqrs", x_bar, y_bar)
            value = xy.mean(0) - outer
            infl = (
                xy
                - torch.einsum("mlpq,lrs->mlpqrs", x, y_bar)
                - torch.einsum("lpq,mlrs->mlpqrs", x_bar, y)
            )
            return value, infl.std(0) / M**0.5

        A, A_err = cov(s["a"], s["b"], b_bar, s["b"], b_bar)
        D, D_err = cov(s["d"], s["b"], b_bar, s["k"], k_bar)
        bf, bf_err = (torch.as_tensor(t) for t in self._BF.result())
        out = {
            "Theta": (b_bar.numpy(), (s["b"].std(0) / M**0.5).numpy()),
            "A": (A * scale4, A_err * scale4),
            "B": (bf[0] * scale4, bf_err[0] * scale4),
            "D": (D * scale4, D_err * scale4),
            "F": (bf[1] * scale4, bf_err[1] * scale4),
        }
        for name in "ABDF":
            v, e = out[name]
            v[0], e[0] = 0.0, 0.0  # layer 1: Ĥ^{(1)} is deterministic (eq. 8.23)
            out[name] = (v.numpy(), e.numpy())
        return out
