"""TensorBoard event files of training runs, written with tensorboardX (no TensorFlow needed).

``metrics.jsonl`` stays the source of truth; the event files are a view of it for ``tensorboard
--logdir=DIR``, the way the Flax examples that JAX users start from log their runs.

**Layout** (paths from `vae_jax.app.run_folder.tensorboard_dir`): a run writes into
``DIR/tensorboard/``; member II of a sweep into ``DIR/tensorboard/II_LABEL/`` (LABEL: its swept
values, e.g. ``01_beta=2,learning_rate=0.003``), so that TensorBoard lists each member as a run
of its own.

**What an epoch writes** (`write_epoch`), all at the global step of the epoch's last optimizer
step (the metrics line's ``step``):

- a scalar for every key of the epoch's metrics line but ``step``, tagged with the key itself
  (``train_loss``, ``test_neg_elbo``, …, ``kl_weight``, ``epoch``, ``epoch_time_s``), with a
  sweep member's own values (`run_folder.member_metrics`); TensorBoard stores them as float32;
- the images ``reconstructions`` and ``samples``: the picture grids of ``images/``, pixel for
  pixel (grey pictures become RGB);
- with the first epoch each training command trains, the text ``config``: the model's config as
  JSON (a Markdown code block, so TensorBoard's text tab shows it as written).

Each call writes one new event file and closes it (`tensorboardX.SummaryWriter`), so TensorBoard
sees an epoch as soon as it ends and a file that cannot be written stops the run at that epoch
(the caller turns the `OSError` into one ``error:`` line, as for ``metrics.jsonl``); file names
end in the time in nanoseconds, which orders them as they were written.

**Resume.** A killed run may have written epochs after its last checkpoint; the resumed run drops
their metrics lines (`run_folder.truncate_metrics`) and redoes them. Its first event file starts
with a purge at the checkpoint's step + 1 (tensorboardX's ``purge_step``: a session start that
makes TensorBoard's reader drop every event of a later step read before it), so each step shows
once, with the values of ``metrics.jsonl``.

Only the process that writes ``metrics.jsonl`` (process 0) calls this module, and only the
trainer: readers of a run folder never create or change event files. tensorboardX is imported
when the first epoch is written, so ``import vae_jax`` stays light.
"""

import json
import time
from typing import Any, Mapping

import numpy as np

CONFIG_TAG = "config"
# More than the events of one call (a scalar per metric, two images, the config, the purge), so
# that adding one never waits on the writer's thread.
_MAX_QUEUE = 1000


def config_text(config_json: str) -> str:
    """A config as JSON → the Markdown that `write_epoch` stores: an indented code block, which
    TensorBoard's text tab shows verbatim. `config_json_from_text` is its inverse."""
    return "\n".join("    " + line for line in config_json.splitlines())


def config_json_from_text(text: str) -> dict[str, Any]:
    """The config (a dict) that a `config_text` holds. Raises `ValueError` if it holds none."""
    return json.loads("\n".join(line[4:] for line in text.splitlines()))


def write_epoch(logdir: str, record: Mapping[str, Any], pictures: Mapping[str, np.ndarray],
                config_json: str | None = None, purge_step: int | None = None) -> None:
    """Writes one model's epoch as a new TensorBoard event file in `logdir` (created if missing),
    flushed and closed before it returns.

    Args:
      logdir: the folder of the model's event files (`run_folder.tensorboard_dir`).
      record: the model's metrics line: ``step`` (int, optimizer steps done: the global step of
        every event) and scalars (floats), each written under its key.
      pictures: {tag: uint8 array (height, width, channels)}, channels 1 (grey), 3 or 4, as
        `run_folder.picture_grids` returns them.
      config_json: the model's config as JSON, written as the text ``config`` (None: no text).
      purge_step: when given, TensorBoard drops the events of this step and later ones that it
        read before this file (the orphans of a killed run): the first step this command trains.

    Raises:
      OSError: the folder or the file cannot be written.
      ValueError: `record` has no integer ``step`` or a value that is not a number, or a picture
        is not (height, width, channels).
    """
    from tensorboardX import SummaryWriter  # pylint: disable=import-outside-toplevel

    step = record.get("step")
    if isinstance(step, bool) or not isinstance(step, (int, np.integer)):
        raise ValueError(f"the metrics line needs an integer 'step', got {step!r}")
    scalars = {key: float(value) for key, value in record.items() if key != "step"}
    for tag, picture in pictures.items():
        if np.ndim(picture) != 3:
            raise ValueError(f"picture {tag!r} must be (height, width, channels), got shape "
                             f"{np.shape(picture)}")
    writer = SummaryWriter(logdir, purge_step=purge_step, max_queue=_MAX_QUEUE,
                           filename_suffix=f".{time.time_ns()}")
    try:
        for key, value in scalars.items():
            writer.add_scalar(key, value, int(step))
        for tag, picture in pictures.items():
            writer.add_image(tag, np.asarray(picture, np.uint8), int(step), dataformats="HWC")
        if config_json is not None:
            writer.add_text(CONFIG_TAG, config_text(config_json), int(step))
    finally:
        writer.close()
