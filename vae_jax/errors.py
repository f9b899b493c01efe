"""Errors raised by vae_jax for bad input: each message names the problem and how to fix it."""


class VAEJaxError(Exception):
    """Base class of the errors vae_jax raises for bad input; scripts print them as one line."""


class ConfigError(VAEJaxError, ValueError):
    """A configuration field has a bad value or an unknown name."""


class ShapeError(VAEJaxError, ValueError):
    """An array has the wrong shape or dtype for the function it was passed to."""


class DataError(VAEJaxError):
    """A dataset cannot be found, prepared or used."""


class CheckpointError(VAEJaxError):
    """A checkpoint cannot be restored into this run (missing, incompatible or broken)."""
