"""Deprecated: moved to `vae_jax.app.configs` (vae_jax 0.2); this alias goes in 0.3.

``from vae_jax.configs import default`` (how presets written before 0.2 begin) still works."""

from vae_jax._deprecated import forward

__getattr__ = forward(__name__, "vae_jax.app.configs")
