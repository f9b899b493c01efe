"""Trains `mock_train.small_config` on mocked MNIST once per device count given on the command
line, in one process with 4 virtual CPU devices, and prints each run's metrics lines as JSON;
``COUNT:PIPELINE`` also sets `config.input_pipeline`:

    python tests/data_parallel_run.py TMPDIR 1 4 4:stream
"""

import os
import sys

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                           + " --xla_force_host_platform_device_count=4")

import json  # pylint: disable=wrong-import-position

import mock_train  # pylint: disable=wrong-import-position
from vae_jax.app import run_folder, training  # pylint: disable=wrong-import-position


def main(tmp: str, runs_wanted: list[str]) -> None:
    runs = {}
    with mock_train.mocked_mnist():
        for run in runs_wanted:
            count, _, pipeline = run.partition(":")
            workdir = os.path.join(tmp, f"devices{count}{pipeline}")
            config = mock_train.small_config(num_devices=int(count), num_epochs=3,
                                             input_pipeline=pipeline or "device",
                                             stream_chunk_mib=0.02,
                                             data_dir=os.path.join(tmp, "tfds"))
            training.train_and_evaluate(config, workdir)
            with open(os.path.join(workdir, run_folder.METRICS_FILE), encoding="utf-8") as f:
                runs[run] = [json.loads(line) for line in f]
    print(json.dumps(runs))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
