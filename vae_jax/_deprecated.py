"""Old module paths that moved into `vae_jax.app`; they keep working for one release."""

import importlib
import importlib.util
import warnings


def forward(old: str, new: str):
    """A module ``__getattr__`` for `old` that returns the attributes of module `new`, with a
    `DeprecationWarning` naming the new path."""

    def __getattr__(name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        warnings.warn(f"{old} moved to {new} in vae_jax 0.2 and will be removed in 0.3; import "
                      f"{new}.{name}", DeprecationWarning, stacklevel=2)
        module = importlib.import_module(new)
        if (not hasattr(module, name) and hasattr(module, "__path__")
                and importlib.util.find_spec(f"{new}.{name}") is not None):
            return importlib.import_module(f"{new}.{name}")  # a submodule: a preset
        return getattr(module, name)

    return __getattr__
