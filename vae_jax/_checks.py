"""Argument checks shared by the pure functions (private): each raises one line naming the
function, the argument and what it must be."""

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from vae_jax.errors import ConfigError

_FLOAT32_MAX = float(np.finfo(np.float32).max)


def describe(value: Any) -> str:
    """A short one-line description of a bad argument: an array by its dtype and shape, anything
    else by its repr, cut to its first 60 characters."""
    shape = getattr(value, "shape", None)
    if shape is not None and tuple(shape) != ():
        return f"a {getattr(value, 'dtype', '')} array of shape {tuple(shape)}"
    text = " ".join(repr(value).split())
    return text if len(text) <= 60 else text[:57] + "..."


def real_number(function: str, name: str, value: Any) -> float | None:
    """`value` as a float, or None when it is traced (a swept hyperparameter, whose value is
    known only when the step runs). `ConfigError` unless it is one real number (ndim 0) within
    float32's range (beyond it, computations would turn it into ±inf)."""
    if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
        try:
            concrete = float(value)
        except OverflowError:  # an int beyond any float
            concrete = math.inf
    else:
        try:
            array = None if isinstance(value, (str, bytes)) else jnp.asarray(value)
        except (TypeError, ValueError, OverflowError):
            array = None
        real = array is not None and (jnp.issubdtype(array.dtype, jnp.integer)
                                      or jnp.issubdtype(array.dtype, jnp.floating))
        if not real or array.ndim != 0:
            shown = value if array is None or not array.ndim else array
            raise ConfigError(f"{function}: {name} must be one real number (a float or a 0-d "
                              f"array), got {describe(shown)}")
        try:
            concrete = float(array)
        except jax.errors.ConcretizationTypeError:
            return None
    if abs(concrete) > _FLOAT32_MAX and not math.isnan(concrete) and \
            (math.isfinite(concrete) or isinstance(value, int)):
        raise ConfigError(f"{function}: {name}={concrete:.3g} is beyond float32's range (±3.4e38)")
    return concrete
