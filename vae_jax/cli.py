"""The command-line plumbing the scripts share: `run`, and a ``--config`` preset flag. Bad
``--config.FIELD=value`` overrides, any other bad flag and a `VAEJaxError` end the program with
one line ``error: …`` (and the usage, for flags), never a traceback."""

import sys
from typing import Callable

from absl import app, flags, logging
from ml_collections import config_flags

from vae_jax import configs
from vae_jax.errors import VAEJaxError

_OVERRIDE_ERRORS = (AttributeError, KeyError, TypeError, ValueError)


def _exit_bad_override(error: Exception, usage: str):
    message = str(error).strip("'\"").replace("\\'", "'").replace("\\n", " ")
    sys.exit(f"error: bad --config override: {message}\nUsage: {usage}")


def define_config_flag(usage: str) -> flags.FlagHolder:
    """Defines ``--config`` (a preset file, default `configs.DEFAULT_CONFIG`, locked so that an
    unknown field is an error). ml_collections reads the overrides already here, so a bad one
    exits at once."""
    try:
        return config_flags.DEFINE_config_file(
            "config", configs.DEFAULT_CONFIG,
            "Preset config file (default: vae_jax/configs/default.py).", lock_config=True)
    except _OVERRIDE_ERRORS as error:
        _exit_bad_override(error, usage)
        raise  # unreachable: sys.exit raised


def flags_parser(usage: str) -> Callable:
    """absl's flag parsing for ``app.run(main, flags_parser=...)``, with bad flags and bad
    ``--config.FIELD`` overrides reported in one line."""

    def parse(argv):
        try:
            return flags.FLAGS(argv)
        except flags.Error as error:
            sys.exit(f"error: {error}\nUsage: {usage}")
        except _OVERRIDE_ERRORS as error:
            _exit_bad_override(error, usage)

    return parse


def define_data_dir_flags() -> tuple[flags.FlagHolder, flags.FlagHolder]:
    """``--data_dir`` and ``--manual_dir`` for scripts that reload a run's dataset (default: the
    folders the run was trained with)."""
    return (flags.DEFINE_string("data_dir", None, "TFDS data folder (default: the run's)."),
            flags.DEFINE_string("manual_dir", None,
                                "Folder with the original files (default: the run's)."))


def run(command: Callable[[], None], usage: str,
        errors: tuple[type[Exception], ...] = (VAEJaxError,)) -> None:
    """`app.run` of a script whose work is ``command()``: flags parsed by `flags_parser`, no
    positional arguments, absl logging at WARNING (Orbax and TFDS log every file they touch at
    INFO), and any of `errors` reported as one line ``error: …`` with exit status 1."""

    def main(argv):
        if len(argv) > 1:
            raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
        logging.set_verbosity(logging.WARNING)
        try:
            command()
        except errors as error:
            sys.exit(f"error: {error}")

    app.run(main, flags_parser=flags_parser(usage))
