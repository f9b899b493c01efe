"""The streaming input pipeline: the batches, the automatic choice, and training that gives the
results of the training set kept on the device."""

import json
import os

import jax
import numpy as np
import pytest

import vae_jax
from mock_train import assert_bit_identical, mocked_mnist, restore_latest, small_config
from vae_jax.app import distributed, input_pipeline, run_folder, training


def _shardings():
    return distributed.data_parallel_shardings(distributed.make_mesh(1))


def test_streamed_chunks_hold_the_examples_of_their_indices_in_order():
    images = np.random.default_rng(0).integers(0, 256, (50, 4, 3, 1), np.uint8)
    indices = np.random.default_rng(1).permutation(50)[:48].reshape(4, 3, 4).astype(np.int32)
    replicated, batch_sharded = _shardings()
    chunks = list(input_pipeline.stream_chunks(images, indices, replicated, batch_sharded,
                                               prefetch=3))
    assert len(chunks) == 4
    for (chunk_images, local), chunk in zip(chunks, indices):
        assert chunk_images.shape == (12, 4, 3, 1) and chunk_images.dtype == np.uint8
        np.testing.assert_array_equal(np.asarray(chunk_images)[np.asarray(local)], images[chunk])


def test_device_chunks_index_the_whole_training_set():
    images = jax.numpy.arange(10)
    indices = np.arange(8, dtype=np.int32).reshape(2, 2, 2)
    replicated, batch_sharded = _shardings()
    chunks = list(input_pipeline.device_chunks(images, indices, batch_sharded))
    assert [c[0] is images for c in chunks] == [True, True]
    np.testing.assert_array_equal(np.stack([np.asarray(c[1]) for c in chunks]), indices)
    del replicated


@pytest.mark.parametrize("steps,step_bytes,max_bytes,at_least,expected", [
    (469, 100_352, 64 * 2**20, 1, 1),  # MNIST fits in one 64 MiB chunk
    (469, 100_352, 2**20, 1, 67),  # ≥ 45 chunks of 1 MiB: the next divisor of 469 = 7·67
    (469, 100_352, None, 20, 67),  # the progress bar's ≥ 20 calls
    (4, 10, 15, 1, 4),  # a chunk of one step is larger than allowed: one step per chunk
    (6, 10, 25, 1, 3),
])
def test_chunks_divide_the_epoch_and_respect_the_size(steps, step_bytes, max_bytes, at_least,
                                                      expected):
    assert input_pipeline.num_chunks(steps, step_bytes, max_bytes, at_least) == expected


def test_auto_streams_only_what_does_not_fit(monkeypatch):
    devices = jax.devices()
    assert input_pipeline.resolve("auto", 10**6, devices) == "device"
    monkeypatch.setattr(input_pipeline, "free_device_memory", lambda device: 3 * 10**6)
    assert input_pipeline.resolve("auto", 10**6, devices) == "device"
    assert input_pipeline.resolve("auto", 2 * 10**6, devices) == "stream"
    assert input_pipeline.resolve("device", 2 * 10**6, devices) == "device"
    monkeypatch.setattr(input_pipeline, "free_device_memory", lambda device: None)
    assert input_pipeline.resolve("auto", 2 * 10**6, devices) == "device"


def test_free_device_memory_is_known_on_this_machine():
    free = input_pipeline.free_device_memory(jax.devices()[0])
    assert free is None or free > 0


def _metrics(workdir):
    with open(os.path.join(workdir, run_folder.METRICS_FILE), encoding="utf-8") as f:
        return [{k: v for k, v in json.loads(line).items() if k != "epoch_time_s"} for line in f]


@pytest.mark.slow
@pytest.mark.parametrize("loop", ["scan", "step"])
def test_streamed_training_equals_training_on_the_device(tmp_path, capsys, loop):
    data_dir = str(tmp_path / "tfds")
    config = small_config(num_epochs=2, data_dir=data_dir, train_loop=loop)
    # 0.02 MiB holds one 16-image step (12.25 KiB): each of the 4 steps of an epoch is a chunk.
    streamed = small_config(num_epochs=2, data_dir=data_dir, train_loop=loop,
                            input_pipeline="stream", stream_chunk_mib=0.02)
    with mocked_mnist():
        training.train_and_evaluate(config, str(tmp_path / "device"))
        assert "Streaming" not in capsys.readouterr().out
        training.train_and_evaluate(streamed, str(tmp_path / "stream"))
        assert "Streaming the training set" in capsys.readouterr().out
    assert _metrics(tmp_path / "stream") == _metrics(tmp_path / "device")
    assert_bit_identical(restore_latest(tmp_path / "stream", config),
                         restore_latest(tmp_path / "device", config))


@pytest.mark.slow
def test_auto_streams_a_training_set_larger_than_the_free_memory(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(input_pipeline, "free_device_memory", lambda device: 10_000)
    with mocked_mnist():
        training.train_and_evaluate(small_config(data_dir=str(tmp_path / "tfds")),
                                    str(tmp_path / "run"))
    assert "Streaming the training set" in capsys.readouterr().out


@pytest.mark.slow
def test_a_streamed_run_resumes_on_the_device(tmp_path):
    data_dir = str(tmp_path / "tfds")
    with mocked_mnist():
        training.train_and_evaluate(small_config(data_dir=data_dir, input_pipeline="stream"),
                                    str(tmp_path / "a"))
        training.train_and_evaluate(small_config(data_dir=data_dir, num_epochs=2),
                                    str(tmp_path / "a"))
        training.train_and_evaluate(small_config(data_dir=data_dir, num_epochs=2),
                                    str(tmp_path / "b"))
    assert _metrics(tmp_path / "a") == _metrics(tmp_path / "b")


@pytest.mark.parametrize("field,value,message", [
    ("input_pipeline", "disk", "config.input_pipeline must be one of ('auto', 'device', 'stream')"),
    ("stream_chunk_mib", 0, "config.stream_chunk_mib must be a positive number"),
])
def test_bad_pipeline_fields_are_named(field, value, message):
    with pytest.raises(vae_jax.ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        vae_jax.app.configs.validate(small_config(**{field: value}))
