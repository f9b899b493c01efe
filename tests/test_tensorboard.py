"""TensorBoard event files of runs and sweeps (`vae_jax.app.summaries`), read back with
TensorBoard's own reader: the scalars equal metrics.jsonl's, the images equal the PNG grids, the
config is there as text, a resume after a kill shows each step once, and readers write none."""

import io
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from tensorboard.backend.event_processing import plugin_event_accumulator
from tensorboard.util import tensor_util

import vae_jax
from conftest import REPO, assert_one_line_error
from mock_train import mocked_mnist, train, train_sweep
from test_run_folder import unwritable
from vae_jax.app import run_folder, runs, summaries, sweep as sweep_lib

TEXT_TAG = f"{summaries.CONFIG_TAG}/text_summary"  # where tensorboardX's add_text puts it


def read_events(logdir: str) -> plugin_event_accumulator.EventAccumulator:
    """Every event in `logdir` as ``tensorboard --logdir`` loads it: with the reader of its data
    ingester, which holds scalars, images and text alike as tensors and purges every kind of the
    orphans of a killed run (the older `event_accumulator` leaves text events unpurged)."""
    events = plugin_event_accumulator.EventAccumulator(
        logdir, size_guidance={plugin_event_accumulator.TENSORS: 0})  # 0: keep every event
    events.Reload()
    return events


def values(events, tag: str) -> list[tuple[int, np.ndarray]]:
    """(step, value) of each event of `tag`."""
    return [(e.step, tensor_util.make_ndarray(e.tensor_proto)) for e in events.Tensors(tag)]


def config_texts(events) -> list[tuple[int, dict]]:
    """(step, config) of each config text."""
    return [(step, summaries.config_json_from_text(text.item().decode()))
            for step, text in values(events, TEXT_TAG)]


def assert_events_are_the_run_folder(logdir: str, lines: list[dict], picture_folder: str) -> None:
    """The events in `logdir` hold one scalar per key of each of `lines` (but step) with its
    value, at its step, each step once; the picture grids of ``picture_folder/images``; and the
    config as text."""
    events = read_events(logdir)
    steps = [line["step"] for line in lines]
    assert sorted(events.PluginTagToContent("scalars")) == sorted(set(lines[0]) - {"step"})
    for tag in events.PluginTagToContent("scalars"):
        assert [(step, value.dtype, value.item()) for step, value in values(events, tag)] == [
            (line["step"], np.float32, np.float32(line[tag])) for line in lines], tag
    assert sorted(events.PluginTagToContent("images")) == sorted(run_folder.PICTURES)
    for name in run_folder.PICTURES:
        assert [step for step, _ in values(events, name)] == steps
        for (_, (width, height, encoded)), line in zip(values(events, name), lines):
            with Image.open(os.path.join(picture_folder, run_folder.IMAGES_DIR,
                                         f"{name}_epoch{line['epoch']:03d}.png")) as png:
                expected = np.asarray(png)
            picture = np.asarray(Image.open(io.BytesIO(encoded)))
            assert (int(height), int(width)) == expected.shape == picture.shape[:2]
            for channel in range(3):  # grey, stored as RGB
                np.testing.assert_array_equal(picture[..., channel], expected)
    assert list(events.PluginTagToContent("text")) == [TEXT_TAG]


@pytest.fixture(name="run", scope="module")
def fixture_run(tmp_path_factory):
    """A 1-epoch run of the small test model on mocked MNIST."""
    root = tmp_path_factory.mktemp("tensorboard")
    workdir, data_dir = str(root / "run"), str(root / "tfds")
    train(workdir, 1, data_dir)
    return {"workdir": workdir, "data_dir": data_dir}


@pytest.mark.slow
def test_a_run_writes_every_metric_its_pictures_and_its_config(run):
    workdir = run["workdir"]
    logdir = run_folder.tensorboard_dir(workdir)
    assert logdir == os.path.join(workdir, "tensorboard")
    lines = run_folder.read_metrics(workdir)
    assert len(lines) == 1 and lines[0]["step"] == 4
    assert_events_are_the_run_folder(logdir, lines, workdir)
    with open(os.path.join(workdir, run_folder.CONFIG_FILE), encoding="utf-8") as f:
        assert config_texts(read_events(logdir)) == [(4, json.load(f))]


@pytest.mark.slow
def test_a_resumed_run_shows_each_step_once_with_the_values_of_metrics_jsonl(run, tmp_path):
    workdir = str(tmp_path / "run")
    shutil.copytree(run["workdir"], workdir)
    logdir = run_folder.tensorboard_dir(workdir)
    # What a run killed in epoch 3, after its checkpoint at step 4, leaves: the event files of
    # epochs 2 and 3 (their metrics lines the resumed run drops).
    (line,) = run_folder.read_metrics(workdir)
    for step, epoch in ((8, 2), (12, 3)):
        summaries.write_epoch(logdir, {**dict.fromkeys(line, -1.0), "step": step, "epoch": epoch},
                              {name: np.zeros((6, 6, 1), np.uint8) for name in run_folder.PICTURES},
                              config_json="{}", purge_step=5 if epoch == 2 else None)
    assert [step for step, _ in values(read_events(logdir), "train_loss")] == [4, 8, 12]
    train(workdir, 2, run["data_dir"])  # resumes from step 4: epoch 2
    lines = run_folder.read_metrics(workdir)
    assert [line["step"] for line in lines] == [4, 8]
    # Each step once, with the values of metrics.jsonl, and nothing of the orphans.
    assert_events_are_the_run_folder(logdir, lines, workdir)
    # Each training command writes its config with the first epoch it trains.
    assert [step for step, _ in config_texts(read_events(logdir))] == [4, 8]


@pytest.mark.slow
def test_a_sweep_writes_each_members_own_values_in_a_folder_of_its_own(run, tmp_path):
    workdir = str(tmp_path / "sweep")
    train_sweep(workdir, 1, run["data_dir"], "beta=1,2")
    assert sorted(os.listdir(run_folder.tensorboard_dir(workdir))) == ["00_beta=1", "01_beta=2"]
    (line,) = run_folder.read_metrics(workdir)
    sweep = sweep_lib.parse_sweep("beta=1,2")
    for i in range(2):
        logdir = sweep_lib.member_logdir(workdir, i, sweep)
        member = run_folder.member_metrics(line, i)
        assert member["kl_weight"] == [1.0, 2.0][i]
        assert_events_are_the_run_folder(logdir, [member],
                                         sweep_lib.member_dir(workdir, i, sweep.size))
        ((step, config),) = config_texts(read_events(logdir))
        assert step == 4 and config["beta"] == [1.0, 2.0][i]


@pytest.mark.slow
def test_readers_write_no_event_files(run, tmp_path):
    workdir = str(tmp_path / "run")
    shutil.copytree(run["workdir"], workdir,
                    ignore=shutil.ignore_patterns(run_folder.TENSORBOARD_DIR))
    before = sorted(os.listdir(workdir))
    runs.load_config(workdir)
    with mocked_mnist():
        runs.load_run(workdir, data_dir=run["data_dir"])
    assert sorted(os.listdir(workdir)) == before
    assert not os.path.exists(run_folder.tensorboard_dir(workdir))


@pytest.mark.slow
def test_an_unwritable_tensorboard_folder_stops_a_run_before_training_in_one_line(tmp_path):
    member = tmp_path / "sweep" / "tensorboard" / "00_beta=1"
    member.mkdir(parents=True)
    with unwritable(str(member)), pytest.raises(
            vae_jax.WorkdirError, match=f"{member} is not writable .* use another --workdir"):
        run_folder.check_writable(str(tmp_path / "sweep"))
    folder = tmp_path / "run" / "tensorboard"
    folder.mkdir(parents=True)
    with unwritable(str(folder)):
        result = subprocess.run([sys.executable, str(REPO / "scripts" / "train.py"),
                                 f"--workdir={tmp_path / 'run'}"],
                                capture_output=True, text=True, timeout=300, check=False)
    assert_one_line_error(result, f"{folder} is not writable")
    assert os.listdir(folder) == []


def test_an_event_file_that_cannot_be_written_raises_at_once(tmp_path):
    """The error comes from the call that writes the epoch (not from tensorboardX's thread, later),
    and `fit`'s `run_folder.write_errors` makes it one line."""
    logdir = tmp_path / "tensorboard"
    logdir.mkdir()
    pictures = {"samples": np.zeros((6, 6, 1), np.uint8)}
    with unwritable(str(logdir)), pytest.raises(
            vae_jax.WorkdirError, match=rf"could not write epoch 1's event file: {logdir}/events"):
        with run_folder.write_errors("epoch 1's event file", "nothing was kept"):
            summaries.write_epoch(str(logdir), {"step": 4, "epoch": 1}, pictures)
    assert os.listdir(logdir) == []
    with pytest.raises(ValueError, match="an integer 'step'"):
        summaries.write_epoch(str(logdir), {"epoch": 1}, pictures)
    with pytest.raises(ValueError, match=r"picture 'samples' must be \(height, width"):
        summaries.write_epoch(str(logdir), {"step": 4}, {"samples": np.zeros((6, 6))})
