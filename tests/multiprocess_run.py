"""One process of a multi-process run of `mock_train.small_config` on mocked MNIST, joined through
`vae_jax.app.distributed.initialize` (CPU devices, collectives over gloo):

    python tests/multiprocess_run.py COORDINATOR NUM_PROCESSES PROCESS_ID WORKDIR DATA_DIR PIPELINE

Prints the final metrics line as JSON.
"""

import json
import sys

import mock_train
from vae_jax.app import distributed, training


def main(coordinator: str, num_processes: int, process_id: int, workdir: str, data_dir: str,
         pipeline: str) -> None:
    distributed.initialize(coordinator, num_processes, process_id)
    with mock_train.mocked_mnist():
        record = training.train_and_evaluate(
            mock_train.small_config(num_epochs=2, data_dir=data_dir, input_pipeline=pipeline,
                                    stream_chunk_mib=0.02), workdir)
    print(json.dumps(record))


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), *sys.argv[4:7])
