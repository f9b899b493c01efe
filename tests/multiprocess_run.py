"""One process of a multi-process run of `mock_train.small_config` on mocked MNIST, joined through
`vae_jax.app.distributed.initialize` (CPU devices, collectives over gloo):

    python tests/multiprocess_run.py COORDINATOR NUM_PROCESSES PROCESS_ID WORKDIR DATA_DIR \
        PIPELINE [SWEEP]

With a sweep specification SWEEP (e.g. ``beta=1,2``) it trains that sweep instead, its model axis
split over the processes' devices. Prints the final metrics line as JSON.
"""

import json
import sys

import mock_train
from vae_jax.app import distributed, sweep, training


def main(coordinator: str, num_processes: int, process_id: int, workdir: str, data_dir: str,
         pipeline: str, spec: str = "") -> None:
    distributed.initialize(coordinator, num_processes, process_id)
    config = mock_train.small_config(num_epochs=2, data_dir=data_dir, input_pipeline=pipeline,
                                     stream_chunk_mib=0.02)
    with mock_train.mocked_mnist():
        if spec:
            record = sweep.train_sweep(config, sweep.parse_sweep(spec), workdir)
        else:
            record = training.train_and_evaluate(config, workdir)
    print(json.dumps(record))


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), *sys.argv[4:8])
