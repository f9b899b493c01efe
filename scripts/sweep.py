"""Train a hyperparameter sweep as one vmapped program, or extract its members as run folders.

    python scripts/sweep.py --workdir=DIR [--config=PRESET.py] [--config.FIELD=value ...] \\
        --sweep=beta=0.25,0.5,1,2,4,8 [--sweep=learning_rate=1e-3,3e-3] [--sweep_mode=grid|zip]
    python scripts/sweep.py --workdir=DIR --extract=all|I[,J...]

Each ``--sweep=FIELD=V1,V2,...`` sweeps one field (beta, alpha, free_bits, gaussian_sigma,
learning_rate, seed); several combine as a grid (cartesian product, the first field slowest) or,
with ``--sweep_mode=zip``, value by value. The N members train together, epoch by epoch, each
exactly as ``scripts/train.py`` would train it alone (its own seed, data order and noise).
Running the same command again resumes from the latest checkpoint in DIR.

``--extract`` trains nothing: it writes members of the sweep's latest checkpoint as
``scripts/train.py`` run folders ``DIR/members/II`` (checkpoint, config.json, metrics.jsonl), for
``scripts/evaluate.py --workdir=DIR/members/II``. See `vae_jax.app.sweep` for the files in DIR.
"""

from absl import flags

from vae_jax.app import cli

_WORKDIR = flags.DEFINE_string("workdir", None, "Folder for the sweep's checkpoints, metrics and "
                               "pictures.", required=True)
_SWEEP = flags.DEFINE_multi_string("sweep", [], "FIELD=V1,V2,...: the values of one swept "
                                   "field, or of several separated by ';' "
                                   "(beta=0.5,1;seed=0,1)")
_SWEEP_MODE = flags.DEFINE_enum("sweep_mode", "grid", ["grid", "zip"],
                                "grid: every combination of the fields' values; zip: the i-th "
                                "values of every field together.")
_EXTRACT = flags.DEFINE_string("extract", None, "'all' or member indices 'I,J,...': write those "
                               "members of the latest checkpoint as run folders DIR/members/II "
                               "and exit (no training).")
USAGE = ("python scripts/sweep.py --workdir=DIR [--config=PRESET.py] [--config.FIELD=value ...] "
         "--sweep=FIELD=V1,V2,... [--sweep_mode=grid|zip] | --workdir=DIR --extract=all|I,J")


_CONFIG = cli.define_config_flag(USAGE)


def _extract(sweep_lib, workdir: str, which: str) -> None:
    from vae_jax.errors import ConfigError  # pylint: disable=import-outside-toplevel

    run = sweep_lib.restore_sweep(workdir)
    if which.strip() == "all":
        indices = list(range(run.sweep.size))
    else:
        try:
            indices = [int(part) for part in which.split(",") if part.strip()]
        except ValueError:
            raise ConfigError(f"--extract takes 'all' or member indices 'I,J,...', got "
                              f"{which!r}") from None
    for index in indices:
        folder = sweep_lib.extract_member(workdir, index, step=run.step)
        print(f"member {index} ({run.sweep.label(index)}): {folder}", flush=True)


def sweep_or_extract():
    from vae_jax.app import sweep as sweep_lib  # pylint: disable=import-outside-toplevel

    if _EXTRACT.value is not None:
        _extract(sweep_lib, _WORKDIR.value, _EXTRACT.value)
        return
    sweep = sweep_lib.parse_sweep(_SWEEP.value, _SWEEP_MODE.value)
    sweep_lib.train_sweep(_CONFIG.value, sweep, _WORKDIR.value)


if __name__ == "__main__":
    cli.run(sweep_or_extract, USAGE, manual_dir_flag="--config.manual_dir")
