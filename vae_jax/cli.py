"""The command-line plumbing the scripts share: a ``--config`` preset flag whose
``--config.FIELD=value`` overrides, and any other bad flag, end the program with one line
``error: …`` and the usage, never a traceback."""

import sys
from typing import Callable

from absl import flags
from ml_collections import config_flags

from vae_jax import configs

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
