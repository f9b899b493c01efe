"""Train a VAE: ``python scripts/train.py --workdir=DIR [--config=PRESET.py] [--config.X=value]``.

Resumes from the latest checkpoint in DIR. See README.md for the fields and outputs.

Multi-host: start the same command on every host (or process) with ``--coordinator_address=HOST:PORT
--num_processes=N --process_id=I``, or with ``--distributed`` where the cluster tells JAX (Cloud TPU
pods, SLURM, Open MPI). Training is then data-parallel over the devices of all processes.
"""

from absl import flags

from vae_jax.app import cli

_WORKDIR = flags.DEFINE_string("workdir", None, "Folder for checkpoints, metrics and pictures.",
                               required=True)
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", None, "Multi-host: HOST:PORT of process 0's coordinator service.")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Multi-host: number of processes.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "Multi-host: this process's id, 0..N-1.")
_DISTRIBUTED = flags.DEFINE_bool(
    "distributed", False,
    "Multi-host: jax.distributed.initialize() from the cluster's environment.")
USAGE = "python scripts/train.py --workdir=DIR [--config=PRESET.py] [--config.FIELD=value ...]"


_CONFIG = cli.define_config_flag(USAGE)


def train():
    from vae_jax.app import training  # pylint: disable=import-outside-toplevel
    from vae_jax.app import distributed

    distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value,
                           auto=_DISTRIBUTED.value)
    training.train_and_evaluate(_CONFIG.value, _WORKDIR.value)


if __name__ == "__main__":
    cli.run(train, USAGE, manual_dir_flag="--config.manual_dir")
