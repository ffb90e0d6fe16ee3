"""Boundary checks in one place: every public entry validates its arguments with these.

Each check takes the argument's ``name`` (for the message) and its ``value``, and returns the
value in canonical form (a Python float or int, a tuple, a float64 tensor) or raises:

* ``TypeError`` when the *kind* of value is wrong (a string, a bool, a complex number, …);
* ``ValueError`` when the kind is right but the value is not allowed (NaN, negative, …).

Messages say what was given and what is allowed. The rules, the same everywhere:

* a real scalar is an int, a float, a numpy integer or floating scalar (np.float32 included),
  a 0-d numpy array or a 0-d torch tensor of such a dtype; never a bool (``True`` is not 1.0
  here), a string (``"1"``), a complex number, None, or NaN/±inf;
* an integer is an int, a numpy integer or a 0-d integer array/tensor; never a bool or a float
  (``2.0`` is not accepted where a count is meant);
* an input array is a real numeric numpy array, torch tensor or nested list; never complex,
  bool, strings or objects, and always finite.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import numpy as np
import torch

__all__ = [
    "as_inputs",
    "integer",
    "non_negative",
    "per_layer",
    "positive",
    "real",
    "real_array",
    "seed",
]


def _describe(value: object) -> str:
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{type(value).__name__} {text}"


def _scalar(value: object) -> object:
    """A 0-d numpy array or torch tensor → its scalar; anything else unchanged."""
    if isinstance(value, np.ndarray) and value.ndim == 0:
        return value[()]
    if isinstance(value, torch.Tensor) and value.ndim == 0:
        if value.dtype == torch.bool:
            return bool(value)
        if value.is_complex():
            return complex(value)
        return value.item()
    return value


def real(
    name: str,
    value: object,
    *,
    min: float | None = None,
    min_inclusive: bool = True,
    max: float | None = None,
    max_inclusive: bool = True,
) -> float:
    """A finite real scalar as a Python float, optionally bounded.

    Allows int, float, numpy integer/floating scalars (np.float32 included) and 0-d numpy
    arrays or torch tensors of those. Rejects bool, str, complex, None and other objects
    (TypeError), NaN and ±inf, and values outside [min, max] (``min_inclusive=False``: (min, …);
    ValueError).
    """
    v = _scalar(value)
    if isinstance(v, (bool, np.bool_)) or not isinstance(
        v, (numbers.Real, np.integer, np.floating)
    ):
        raise TypeError(f"{name} must be a real number, got {_describe(value)}")
    f = float(v)
    if not math.isfinite(f):
        raise ValueError(f"{name} must be finite, got {f}")
    if min is not None and (f < min or (f == min and not min_inclusive)):
        raise ValueError(f"{name} must be {'≥' if min_inclusive else '>'} {min:g}, got {f:g}")
    if max is not None and (f > max or (f == max and not max_inclusive)):
        raise ValueError(f"{name} must be {'≤' if max_inclusive else '<'} {max:g}, got {f:g}")
    return f


def positive(name: str, value: object) -> float:
    """A finite real scalar > 0 (the rules of :func:`real`)."""
    return real(name, value, min=0.0, min_inclusive=False)


def non_negative(name: str, value: object) -> float:
    """A finite real scalar ≥ 0 (the rules of :func:`real`)."""
    return real(name, value, min=0.0)


def integer(name: str, value: object, *, min: int | None = None, max: int | None = None) -> int:
    """An integer as a Python int, optionally bounded (inclusive).

    Allows int, numpy integer scalars and 0-d integer numpy arrays or torch tensors. Rejects
    bool, floats (even integral ones like 2.0), str and other objects (TypeError), and values
    outside [min, max] (ValueError).
    """
    v = _scalar(value)
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (numbers.Integral, np.integer)):
        raise TypeError(f"{name} must be an int, got {_describe(value)}")
    i = int(v)
    if min is not None and i < min:
        raise ValueError(f"{name} must be ≥ {min}, got {i}")
    if max is not None and i > max:
        raise ValueError(f"{name} must be ≤ {max}, got {i}")
    return i


def seed(name: str, value: object) -> int:
    """A random seed: a non-negative int (the rules of :func:`integer`)."""
    return integer(name, value, min=0)


def per_layer(
    name: str,
    value: object,
    depth: int,
    *,
    min: float | None = None,
    min_inclusive: bool = True,
) -> tuple[float, ...]:
    """One real value per layer: a scalar (repeated ``depth`` times) or a sequence, 1-d numpy
    array or 1-d tensor of exactly ``depth`` scalars, each checked by :func:`real` with the
    given lower bound. A 0-d array counts as a scalar; strings are rejected."""
    v = _scalar(value)
    if isinstance(v, (str, bytes)):
        raise TypeError(f"{name} must be a float or a sequence of {depth} floats, got {v!r}")
    if isinstance(v, (np.ndarray, torch.Tensor)) or (
        isinstance(v, Sequence) and not isinstance(v, (str, bytes))
    ):
        items = list(v.tolist() if isinstance(v, (np.ndarray, torch.Tensor)) else v)
        if len(items) != depth:
            raise ValueError(f"{name} needs one value per layer ({depth}), got {len(items)}")
        return tuple(
            real(f"{name}[{i}]", item, min=min, min_inclusive=min_inclusive)
            for i, item in enumerate(items)
        )
    return (real(name, v, min=min, min_inclusive=min_inclusive),) * depth


def real_array(
    name: str,
    value: object,
    *,
    min: float | None = None,
    min_inclusive: bool = True,
    max_ndim: int | None = None,
    allow_empty: bool = False,
) -> np.ndarray:
    """A real scalar or array (grids, variances) as a float64 numpy array, every entry checked
    by the rules of :func:`real`: numpy arrays, torch tensors, nested lists and scalars of real
    numeric kind; never bool, complex, strings (``"1"`` is not 1.0) or objects (TypeError),
    never NaN/±inf or entries below ``min`` (ValueError). Scalars give 0-d arrays."""
    v = _scalar(value)
    if isinstance(v, torch.Tensor):
        if v.is_complex() or v.dtype == torch.bool:
            raise TypeError(f"{name} must be real numbers, got a {v.dtype} tensor")
        a = v.detach().to("cpu", torch.float64).numpy()
    elif isinstance(v, (np.ndarray, list, tuple)):
        raw = np.asarray(v)
        if raw.dtype.kind not in "iuf":
            kind = {"b": "bool", "c": "complex", "U": "string", "S": "bytes", "O": "object"}
            raise TypeError(
                f"{name} must be real numbers, got {kind.get(raw.dtype.kind, str(raw.dtype))} data"
            )
        a = np.array(raw, dtype=np.float64)
    else:
        a = np.asarray(real(name, v, min=min, min_inclusive=min_inclusive), dtype=np.float64)
    if max_ndim is not None and a.ndim > max_ndim:
        raise ValueError(f"{name} must have at most {max_ndim} dimension(s), got shape {a.shape}")
    if a.size == 0 and not allow_empty:
        raise ValueError(f"{name} must not be empty")
    if not np.isfinite(a).all():
        raise ValueError(f"{name} must be finite, got NaN or inf")
    if min is not None:
        low = a < min if min_inclusive else a <= min
        if low.any():
            bound = "≥" if min_inclusive else ">"
            raise ValueError(f"{name} must be {bound} {min:g}, got {float(a[low].flat[0]):g}")
    return a


def as_inputs(input_dim: int, x: object, *, name: str = "x") -> torch.Tensor:
    """An input set as a float64 CPU tensor of shape (N, input_dim), N ≥ 1.

    Allows real numeric numpy arrays, torch tensors and nested lists/tuples of numbers (a 1-d
    array when ``input_dim`` is 1). Rejects complex, bool, string and object data (TypeError),
    other shapes, empty sets and NaN/inf (ValueError).
    """
    if isinstance(x, torch.Tensor):
        if x.is_complex() or x.dtype == torch.bool:
            raise TypeError(f"{name} must be a real array, got a {x.dtype} tensor")
        t = x.detach().to("cpu", torch.float64)
    elif isinstance(x, (np.ndarray, list, tuple)):
        a = np.asarray(x) if not isinstance(x, np.ndarray) else x
        if a.dtype.kind not in "iuf":
            kind = {"b": "bool", "c": "complex", "U": "string", "S": "bytes", "O": "object"}
            raise TypeError(
                f"{name} must be a real numeric array, got {kind.get(a.dtype.kind, str(a.dtype))} "
                "data"
            )
        t = torch.from_numpy(np.array(a, dtype=np.float64))  # a copy: inputs may be read-only
    else:
        raise TypeError(f"{name} must be a numpy array or torch tensor, got {type(x).__name__}")
    if t.ndim == 1 and input_dim == 1:
        t = t[:, None]
    if t.ndim != 2 or t.shape[1] != input_dim:
        raise ValueError(
            f"{name} must have shape (N, input_dim) = (N, {input_dim}), got {tuple(t.shape)}"
        )
    if t.shape[0] < 1:
        raise ValueError(f"{name} must contain at least one input (N ≥ 1)")
    if not torch.isfinite(t).all():
        raise ValueError(f"{name} contains NaN or inf; all inputs must be finite")
    return t
