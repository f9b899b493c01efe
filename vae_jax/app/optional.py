"""The optional dependencies of vae_jax, and the one-line error that names the extra to install.

The core (``pip install -e .``: the pure functions, the training engine on in-memory arrays,
checkpoints, metrics, TensorBoard event files and PNG picture grids) needs neither TensorFlow nor
matplotlib. What does imports them through `require`, which raises `MissingDependencyError` with
one line naming the ``pip install`` command of the extra that provides them:

- ``data``: TensorFlow Datasets and TensorFlow, to load datasets by name (`vae_jax.app.data`);
- ``plots``: matplotlib, for `vae_jax.app.plots`, scripts/visualize.py and a sweep's
  rate–distortion picture;
- ``all``: both.

The scripts print the error as ``error: <message>`` (`vae_jax.app.cli.run`), without a traceback.
"""

import importlib
import os
from types import ModuleType

from vae_jax.errors import VAEJaxError

# Import name → (what the user knows it as, the extra that installs it).
_PACKAGES = {
    "tensorflow": ("TensorFlow", "data"),
    "tensorflow_datasets": ("TensorFlow Datasets", "data"),
    "matplotlib": ("matplotlib", "plots"),
}
_PROJECT = "vae_jax"


class MissingDependencyError(VAEJaxError, ImportError):
    """An optional dependency is not installed (or cannot be imported).

    An `ImportError` too, so code that tolerates a missing module keeps working.

    Attributes:
      module: the import name that failed, e.g. ``"matplotlib"``.
      extra: the extra of vae_jax that installs it, e.g. ``"plots"``.
    """

    def __init__(self, message: str, module: str, extra: str):
        super().__init__(message, name=module)
        self.module, self.extra = module, extra


def install_command(extra: str) -> str:
    """The ``pip install`` line that adds `extra` to this installation of vae_jax.

    From a source checkout (an editable install, the only kind the README describes) it installs
    that checkout: ``pip install -e '.[extra]'`` when the current folder is the checkout, else its
    absolute path; from a wheel, ``pip install 'vae_jax[extra]'``.
    """
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.realpath(__file__))))
    if not os.path.isfile(os.path.join(root, "pyproject.toml")):
        return f"pip install '{_PROJECT}[{extra}]'"
    where = "." if os.path.realpath(os.getcwd()) == root else root
    return f"pip install -e '{where}[{extra}]'"


def require(module: str, purpose: str) -> ModuleType:
    """Imports and returns `module`, one of the optional dependencies (``tensorflow``,
    ``tensorflow_datasets``, ``matplotlib`` or one of their submodules).

    `purpose` says what needs it, as the subject of a sentence (e.g. ``"loading datasets by
    name"``). Raises `MissingDependencyError` with one line such as ``loading datasets by name
    needs TensorFlow Datasets: pip install -e '.[data]'`` when it cannot be imported (the
    `ImportError` stays attached as the cause); raises `KeyError` for a module that no extra
    provides (a programming error).
    """
    package = module.partition(".")[0]
    label, extra = _PACKAGES[package]
    try:
        return importlib.import_module(module)
    except ImportError as error:
        missing = getattr(error, "name", None)
        if missing is not None and missing.partition(".")[0] == package:
            reason = f"{purpose} needs {label}"
        else:  # installed, but broken, or one of its own dependencies is missing
            detail = str(error).splitlines()[0] if str(error) else type(error).__name__
            reason = f"{purpose} needs {label}, which cannot be imported ({detail})"
        raise MissingDependencyError(f"{reason}: {install_command(extra)}", module,
                                     extra) from error

