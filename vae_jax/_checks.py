"""Argument checks shared by the pure functions (private): each raises one line naming the
function, the argument and what it must be."""

from typing import Any

import jax
import jax.numpy as jnp

from vae_jax.errors import ConfigError


def real_number(function: str, name: str, value: Any) -> float | None:
    """`value` as a float, or None when it is traced (a swept hyperparameter, whose value is
    known only when the step runs). `ConfigError` unless it is one real number (ndim 0)."""
    try:
        array = jnp.asarray(value)
    except (TypeError, ValueError, OverflowError):
        array = None
    real = array is not None and (jnp.issubdtype(array.dtype, jnp.integer)
                                  or jnp.issubdtype(array.dtype, jnp.floating))
    if not real or array.ndim != 0:
        got = (repr(value) if array is None or array.ndim == 0
               else f"a {array.dtype} array of shape {array.shape}")
        raise ConfigError(f"{function}: {name} must be one real number (a float or a 0-d "
                          f"array), got {got}")
    try:
        return float(value)
    except jax.errors.ConcretizationTypeError:
        return None
