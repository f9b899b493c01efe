"""The promises of README.md's "Guarantees": exact resume after SIGKILL, damaged checkpoints caught,
training stopped on NaN/Inf, bad inputs rejected with one clear line, identical reruns."""

import gc
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

import vae_jax
from conftest import REPO
from mock_train import (NUM_EXAMPLES, assert_bit_identical, mocked_mnist, restore_latest,
                        small_config, train, train_sweep)
from vae_jax.app import configs, data, run_folder, sweep as sweep_lib, training

MOCK_TRAIN = str(REPO / "tests" / "mock_train.py")
STEPS_PER_EPOCH = NUM_EXAMPLES // 16
# Enough epochs (of ~0.1 s each) that a process never finishes before the test sees its kill point.
NUM_EPOCHS = 12
LAST = NUM_EPOCHS * STEPS_PER_EPOCH  # the step of the last checkpoint


def checkpoint_steps(workdir) -> list[int]:
    folder = os.path.join(workdir, run_folder.CHECKPOINT_DIR)
    names = os.listdir(folder) if os.path.isdir(folder) else []
    return sorted(int(name) for name in names if name.isdigit())


def saving(workdir) -> bool:
    """Whether Orbax is writing a checkpoint (its temporary folder exists)."""
    folder = os.path.join(workdir, run_folder.CHECKPOINT_DIR)
    return os.path.isdir(folder) and any(".orbax-checkpoint-tmp" in n for n in os.listdir(folder))


def metrics_lines(workdir) -> list[str]:
    path = os.path.join(workdir, run_folder.METRICS_FILE)
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as f:
        return f.readlines()


def metrics_without_times(workdir) -> list[dict]:
    return [{k: v for k, v in json.loads(line).items() if k != "epoch_time_s"}
            for line in metrics_lines(workdir)]


class Training:
    """tests/mock_train.py in its own process; a thread collects its stdout lines."""

    def __init__(self, workdir: str, data_dir: str, env: dict, log, sweep: tuple[str, ...] = ()):
        self.workdir = workdir
        self.process = subprocess.Popen(
            [sys.executable, MOCK_TRAIN, workdir, str(NUM_EPOCHS), data_dir, *sweep],
            stdout=subprocess.PIPE, stderr=log, text=True, env=env)
        self.lines: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.process.stdout:
            self.lines.append(line)

    @property
    def resumed(self) -> bool:
        """Whether it has restored its checkpoint and dropped the metrics lines after it."""
        return any(line.startswith("Resuming") for line in self.lines)

    def kill_when(self, condition, timeout: float = 240.0, sig=signal.SIGKILL) -> None:
        """Sends `sig` (SIGKILL: and waits for the end) as soon as `condition(self)` holds
        (polled every millisecond)."""
        deadline = time.monotonic() + timeout
        while not condition(self):
            assert self.process.poll() is None, f"ended before the kill point: {self.lines}"
            if time.monotonic() > deadline:
                self.process.kill()
                pytest.fail(f"kill point not reached in {timeout} s: {self.lines}")
            time.sleep(0.001)
        self.process.send_signal(sig)
        if sig == signal.SIGKILL:
            assert self.process.wait(timeout=60) == -signal.SIGKILL


def _beyond_last_checkpoint(run: Training) -> bool:
    steps = [json.loads(line)["step"] for line in metrics_lines(run.workdir)
             if line.endswith("\n")]
    return run.resumed and max(steps, default=0) > max(checkpoint_steps(run.workdir), default=0)


# Each kill point: (what it interrupts, when to send SIGKILL). They run one after another on one
# workdir, each process resuming from what the previous one left.
KILL_POINTS = [
    ("the second epoch, as soon as the first checkpoint exists",
     lambda run: STEPS_PER_EPOCH in checkpoint_steps(run.workdir)),
    ("an epoch whose metrics line is written but not its checkpoint", _beyond_last_checkpoint),
    ("a checkpoint save", lambda run: run.resumed and saving(run.workdir)),
]


@pytest.fixture(scope="module", name="reference")
def fixture_reference(tmp_path_factory):
    """An uninterrupted run of NUM_EPOCHS epochs: (workdir, data_dir). Tests change only copies."""
    folder = tmp_path_factory.mktemp("reference")
    data_dir, workdir = str(folder / "tfds"), str(folder / "run")
    train(workdir, NUM_EPOCHS, data_dir)
    return workdir, data_dir


@pytest.fixture(name="run_copy")
def fixture_run_copy(reference, tmp_path):
    """A copy of the reference run's workdir."""
    workdir = str(tmp_path / "run")
    shutil.copytree(reference[0], workdir)
    return workdir


SWEEP = "beta=1,2;learning_rate=1e-3,3e-3"  # 4 members, one program


@pytest.fixture(scope="module", name="sweep_reference")
def fixture_sweep_reference(reference, tmp_path_factory):
    """An uninterrupted sweep of SWEEP over NUM_EPOCHS epochs: (workdir, data_dir)."""
    workdir = str(tmp_path_factory.mktemp("sweep_reference") / "sweep")
    train_sweep(workdir, NUM_EPOCHS, reference[1], SWEEP)
    return workdir, reference[1]


@pytest.mark.slow
@pytest.mark.parametrize("what", ["run", "sweep"])
def test_sigkill_at_any_moment_then_rerun_gives_bit_identical_params(what, request, tmp_path):
    """The same for one run and for a sweep: the engine is the same code."""
    reference, data_dir = request.getfixturevalue(
        "reference" if what == "run" else "sweep_reference")
    sweep = () if what == "run" else (SWEEP,)
    workdir = str(tmp_path / "killed")
    # The compilation cache only makes the restarts faster; it holds what the first one compiled.
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(REPO),
           "JAX_COMPILATION_CACHE_DIR": str(tmp_path / "jax_cache"),
           "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
           "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0"}
    left = []  # what each kill left: (checkpoints, an unfinished save?, metrics lines)
    with open(tmp_path / "stderr.log", "w", encoding="utf-8") as log:
        for _, condition in KILL_POINTS:
            Training(workdir, data_dir, env, log, sweep).kill_when(condition)
            left.append((checkpoint_steps(workdir), saving(workdir), len(metrics_lines(workdir))))
        finished = subprocess.run([sys.executable, MOCK_TRAIN, workdir, str(NUM_EPOCHS), data_dir,
                                   *sweep],
                                  stdout=subprocess.PIPE, stderr=log, text=True, env=env,
                                  timeout=240, check=False)
    assert finished.returncode == 0, (tmp_path / "stderr.log").read_text()[-3000:]

    if what == "run":
        config = small_config(num_epochs=NUM_EPOCHS, data_dir=data_dir)
        (step, state), (reference_step, reference_state) = (
            restore_latest(workdir, config), restore_latest(reference, config))
    else:
        killed, straight = sweep_lib.restore_sweep(workdir), sweep_lib.restore_sweep(reference)
        (step, state), (reference_step, reference_state) = (
            (killed.step, training.to_checkpoint(killed.state)),
            (straight.step, training.to_checkpoint(straight.state)))
        assert killed.sweep.size == 4
    assert step == reference_step == LAST, left
    assert_bit_identical(state, reference_state)
    assert metrics_without_times(workdir) == metrics_without_times(reference), left
    assert not saving(workdir)  # the folder of the interrupted save is gone


# --- Checkpoints: interval, damage ----------------------------------------------------------


@pytest.mark.slow
def test_save_every_epochs_saves_every_nth_epoch_and_the_last(reference, tmp_path):
    workdir = str(tmp_path / "run")
    with mocked_mnist():
        training.train_and_evaluate(
            small_config(num_epochs=NUM_EPOCHS, save_every_epochs=5, data_dir=reference[1]),
            workdir)
    assert checkpoint_steps(workdir) == [5 * STEPS_PER_EPOCH, 10 * STEPS_PER_EPOCH, LAST]
    assert len(metrics_lines(workdir)) == NUM_EPOCHS
    config = small_config(num_epochs=NUM_EPOCHS)
    assert_bit_identical(restore_latest(workdir, config), restore_latest(reference[0], config))


def _data_files(checkpoint: str) -> list[str]:
    folder = os.path.join(checkpoint, "state", "ocdbt.process_0", "d")
    return [os.path.join(folder, name) for name in sorted(os.listdir(folder))]


def _truncate(checkpoint: str) -> None:
    for path in _data_files(checkpoint):
        os.truncate(path, os.path.getsize(path) // 2)


def _delete(checkpoint: str) -> None:
    for path in _data_files(checkpoint):
        os.remove(path)


def _flip(path: str, offset: int) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0xFF]))


def _read_arrays(checkpoint: str) -> list[np.ndarray] | None:
    """The arrays of `checkpoint` as Orbax reads them without our digest check; None when they
    cannot be read."""
    import orbax.checkpoint as ocp  # pylint: disable=import-outside-toplevel

    try:
        with ocp.StandardCheckpointer() as reader:
            return [np.asarray(a) for a in jax.tree.leaves(
                reader.restore(os.path.join(checkpoint, "state")))]
    except Exception:  # pylint: disable=broad-except  (any failure to read is "unreadable")
        return None


def _flip_a_byte(checkpoint: str) -> None:
    """Silent corruption, which only the digest catches: one flipped byte of the array data that
    leaves the arrays readable with other values. Orbax's data files mix compressed blocks (where
    a flip makes reading fail) with raw ones, in an order that differs between saves, so the byte
    is the first of a fixed sequence of offsets in the largest data file that does this."""
    original = _read_arrays(checkpoint)
    path = max(_data_files(checkpoint), key=os.path.getsize)
    size = os.path.getsize(path)
    for fraction in np.concatenate([np.linspace(0.5, 0.95, 10), np.linspace(0.45, 0.05, 9)]):
        offset = int(size * fraction)
        _flip(path, offset)
        damaged = _read_arrays(checkpoint)
        if damaged is not None and any(not np.array_equal(a, b)
                                       for a, b in zip(original, damaged, strict=True)):
            return
        _flip(path, offset)  # unreadable, or a byte that holds no array value: undo, next one
    raise AssertionError(f"no byte of {path} changes the arrays and leaves them readable")


def _garble_config(checkpoint: str) -> None:
    with open(os.path.join(checkpoint, "config", "metadata"), "w", encoding="utf-8") as f:
        f.write('{"dataset": "mni')


DAMAGES = {"truncated": (_truncate, "cannot read its arrays"),
           "deleted": (_delete, "cannot read its arrays"),
           "a flipped byte": (_flip_a_byte, "its arrays differ from the digest saved with them"),
           "a garbled config": (_garble_config, "cannot read its config")}


def _snapshot(folder: str) -> dict[str, bytes]:
    """Every file under `folder` with its contents, by relative path; not the writer's lock file
    (`vae_jax.app.run_folder`), which names the last process that wrote the folder."""
    files = {}
    for root, _, names in os.walk(folder):
        for name in names:
            if name == run_folder.LOCK_FILE and root == folder:
                continue
            with open(os.path.join(root, name), "rb") as f:
                files[os.path.relpath(os.path.join(root, name), folder)] = f.read()
    return files


@pytest.fixture(name="collect_garbage")
def fixture_collect_garbage():
    yield
    gc.collect()


def orbax_abandoned_reads(test):
    """Marks a test that reads damaged checkpoints. Orbax abandons its other reads of a checkpoint
    when one fails, and Python reports each as "Exception ignored" when it collects it: here, at
    the end of this test, not in a later one."""
    return pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")(
        pytest.mark.usefixtures("collect_garbage")(test))


@pytest.mark.slow
@orbax_abandoned_reads
@pytest.mark.parametrize("damage", DAMAGES)
def test_damaged_latest_checkpoint_falls_back_to_the_previous_one(damage, run_copy, capsys):
    damage_fn, reason = DAMAGES[damage]
    folder = os.path.join(run_copy, run_folder.CHECKPOINT_DIR)
    previous = LAST - STEPS_PER_EPOCH
    intact = _snapshot(os.path.join(folder, str(previous)))
    damage_fn(os.path.join(folder, str(LAST)))
    step, _ = restore_latest(run_copy, small_config(num_epochs=NUM_EPOCHS))
    assert step == previous
    warning = capsys.readouterr().err
    assert f"warning: checkpoint {LAST} is damaged: {reason}" in warning
    assert f"resumed from checkpoint {previous}" in warning
    assert checkpoint_steps(run_copy) == [previous - STEPS_PER_EPOCH, previous]
    assert os.path.isdir(os.path.join(folder, f"{LAST}.damaged"))  # moved aside, not deleted
    assert _snapshot(os.path.join(folder, str(previous))) == intact


@pytest.mark.slow
@orbax_abandoned_reads
def test_training_resumes_past_a_damaged_checkpoint_exactly(reference, run_copy, capsys):
    _truncate(os.path.join(run_copy, run_folder.CHECKPOINT_DIR, str(LAST)))
    train(run_copy, NUM_EPOCHS, reference[1])
    assert (f"Resuming from the checkpoint at step {LAST - STEPS_PER_EPOCH} (epoch "
            f"{NUM_EPOCHS - 1})") in capsys.readouterr().out
    config = small_config(num_epochs=NUM_EPOCHS)
    assert_bit_identical(restore_latest(run_copy, config), restore_latest(reference[0], config))
    assert metrics_without_times(run_copy) == metrics_without_times(reference[0])


@pytest.mark.slow
@orbax_abandoned_reads
def test_no_intact_checkpoint_is_a_clear_error_that_changes_nothing(reference, run_copy):
    oldest, middle, newest = checkpoint_steps(run_copy)
    for step, damage_fn in ((oldest, _truncate), (middle, _flip_a_byte), (newest, _delete)):
        damage_fn(os.path.join(run_copy, run_folder.CHECKPOINT_DIR, str(step)))
    before = _snapshot(run_copy)
    message = (rf"no intact checkpoint in .*checkpoints \(checkpoint {newest}: cannot read its "
               rf"arrays .*; checkpoint {middle}: its arrays differ from the digest .*; checkpoint "
               rf"{oldest}: cannot read its arrays .*\); nothing was changed")
    with pytest.raises(vae_jax.DamagedCheckpointError, match=message):
        train(run_copy, NUM_EPOCHS + 1, reference[1])
    assert _snapshot(run_copy) == before


# --- NaN and Inf ------------------------------------------------------------------------------


def _nan_pixels(monkeypatch):
    """Training batches (not the test set) of NaN pixels."""
    prepare_batch = training.prepare_batch

    def nan_batches(key, images, binarize):
        x = prepare_batch(key, images, binarize)
        return x * np.nan if len(images) < NUM_EXAMPLES else x

    monkeypatch.setattr(training, "prepare_batch", nan_batches)


def _infinite_kl(monkeypatch):
    """KL + ∞: the loss is infinite, its gradient is not affected."""
    kl = vae_jax.distributions.gaussian_kl_to_standard_normal
    monkeypatch.setattr(vae_jax.distributions, "gaussian_kl_to_standard_normal",
                        lambda mean, log_variance: kl(mean, log_variance) + np.inf)


def _nan_gradient(monkeypatch):
    """KL + 0·Σ√|μ − μ|: the same value, but d√u/du = ∞ at u = 0 makes the gradient NaN."""
    kl = vae_jax.distributions.gaussian_kl_to_standard_normal
    monkeypatch.setattr(
        vae_jax.distributions, "gaussian_kl_to_standard_normal",
        lambda mean, log_variance: kl(mean, log_variance)
        + 0.0 * jnp.sum(jnp.sqrt(jnp.abs(mean - mean))))


@pytest.mark.slow
@pytest.mark.parametrize("inject,terms", [
    (_nan_pixels, ("reconstruction", "KL", "gradient")),
    (_infinite_kl, ("KL",)),
    (_nan_gradient, ("gradient",)),
])
def test_non_finite_step_stops_training_and_keeps_the_last_checkpoint(
        inject, terms, reference, run_copy, monkeypatch):
    inject(monkeypatch)
    kept = _snapshot(os.path.join(run_copy, run_folder.CHECKPOINT_DIR))
    with pytest.raises(vae_jax.TrainingDivergedError) as error:
        train(run_copy, NUM_EPOCHS + 1, reference[1])
    first_bad = LAST + 1
    assert (error.value.step, error.value.epoch, error.value.terms) == (
        first_bad, NUM_EPOCHS + 1, terms)
    assert str(error.value).startswith(
        f"training diverged at step {first_bad} (epoch {NUM_EPOCHS + 1}): non-finite "
        f"{', '.join(terms)} (NaN or Inf); stopped without saving, the checkpoint at step "
        f"{first_bad - 1} is kept")
    assert _snapshot(os.path.join(run_copy, run_folder.CHECKPOINT_DIR)) == kept
    assert len(metrics_lines(run_copy)) == NUM_EPOCHS


@pytest.mark.slow
def test_absurd_learning_rate_diverges_at_step_2_before_any_checkpoint(reference, tmp_path):
    config = small_config(learning_rate=1e30, data_dir=reference[1])
    with mocked_mnist(), pytest.raises(vae_jax.TrainingDivergedError,
                                       match="diverged at step 2 .*no checkpoint was written"):
        training.train_and_evaluate(config, str(tmp_path))
    assert checkpoint_steps(tmp_path) == [] and metrics_lines(tmp_path) == []


@pytest.mark.slow
def test_debug_nans_switches_jax_debug_nans_on_for_training_only(reference, tmp_path,
                                                                 monkeypatch):
    seen = []

    def record_flags(*args):
        seen.append((jax.config.jax_debug_nans, jax.config.jax_disable_jit))
        raise KeyboardInterrupt  # enough seen: JAX's own op-by-op NaN check is slow

    monkeypatch.setattr(training, "_train_epoch", record_flags)
    for debug_nans in (True, False):
        with mocked_mnist(), pytest.raises(KeyboardInterrupt):
            training.train_and_evaluate(small_config(debug_nans=debug_nans, data_dir=reference[1]),
                                        str(tmp_path / str(debug_nans)))
    assert seen == [(True, True), (False, False)]
    assert not jax.config.jax_debug_nans and not jax.config.jax_disable_jit


# --- Determinism ------------------------------------------------------------------------------


@pytest.mark.slow
def test_same_seed_same_metrics_and_params(reference, tmp_path):
    workdir = str(tmp_path / "again")
    train(workdir, NUM_EPOCHS, reference[1])
    assert metrics_without_times(workdir) == metrics_without_times(reference[0])
    config = small_config(num_epochs=NUM_EPOCHS)
    assert_bit_identical(restore_latest(workdir, config), restore_latest(reference[0], config))


# --- Bad inputs -------------------------------------------------------------------------------


@pytest.mark.parametrize("field,value,message", [
    ("save_every_epochs", 0, "config.save_every_epochs must be a positive integer, got 0"),
    ("max_to_keep", 0, "config.max_to_keep must be a positive integer, got 0"),
    ("debug_nans", "yes", "config.debug_nans must be True or False, got 'yes'"),
    ("progress_bar", 1, "config.progress_bar must be True or False, got 1"),
    ("learning_rate", float("inf"), "config.learning_rate must be a positive number, got inf"),
    ("learning_rate", float("nan"), "config.learning_rate must be a positive number, got nan"),
    ("beta", float("inf"), "config.beta must be a non-negative number, got inf"),
    ("seed", 2**63, rf"config.seed must be a non-negative integer below 2\*\*63, got {2**63}"),
])
def test_bad_config_values_are_named(field, value, message):
    # As a preset file would set them: overrides of a ConfigDict are type-checked already.
    config = ml_collections.ConfigDict({**small_config().to_dict(), field: value})
    with pytest.raises(vae_jax.ConfigError, match=message):
        configs.validate(config)


@pytest.mark.parametrize("x,message", [
    (np.array([0.0, 0.5, 1.0], np.float32), None),
    (np.array([-0.5, 1.2], np.float32),
     r"x has values in \[-0.5, 1.2\], outside the \[0, 1\] that the Bernoulli likelihood needs"),
    (np.array([0.5, np.nan], np.float32), "x holds NaN or infinite values"),
    (np.array([0.5, np.inf], np.float32), "x holds NaN or infinite values"),
    (np.array([0, 255], np.uint8),
     r"x must hold floating-point values in \[0, 1\], got dtype uint8"),
])
def test_check_unit_interval(x, message):
    if message is None:
        data.check_unit_interval(x)
    else:
        with pytest.raises(vae_jax.DataError, match=message):
            data.check_unit_interval(x)


@pytest.mark.slow
def test_data_outside_the_unit_interval_is_rejected_before_training(reference, tmp_path,
                                                                    monkeypatch):
    to_unit_interval = data.to_unit_interval
    monkeypatch.setattr(data, "to_unit_interval", lambda images: to_unit_interval(images) * 2 - 1)
    message = r"the 'mnist' test set has values in \[-1, 0\.99\d*\], outside the \[0, 1\]"
    with mocked_mnist(), pytest.raises(vae_jax.DataError, match=message):
        training.train_and_evaluate(small_config(data_dir=reference[1]), str(tmp_path / "run"))
    assert checkpoint_steps(tmp_path / "run") == []


@pytest.mark.parametrize("make_workdir,reason", [
    (lambda tmp: tmp / "a_file" / "run", "Not a directory"),
    (lambda tmp: tmp / "a_file", None),
    pytest.param(lambda tmp: tmp / "read_only" / "run", "Permission denied",
                 marks=pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")),
])
def test_unwritable_workdir_is_a_clear_error_at_start(make_workdir, reason, tmp_path):
    (tmp_path / "a_file").write_text("not a folder")
    (tmp_path / "read_only").mkdir(mode=0o555)
    workdir = str(make_workdir(tmp_path))
    message = (f"workdir '{workdir}' is not writable: {reason}" if reason
               else f"workdir '{workdir}' is a file, not a directory: pass a folder for the run")
    with pytest.raises(vae_jax.ConfigError, match=message):
        training.train_and_evaluate(small_config(), workdir)


def test_a_disk_too_full_for_the_checkpoints_is_a_clear_error_at_start(tmp_path, monkeypatch):
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(run_folder.shutil, "disk_usage",
                        lambda path: usage._replace(free=10 * 2**20))
    with mocked_mnist():
        with pytest.raises(vae_jax.ConfigError, match="MiB free but the run needs about"):
            training.train_and_evaluate(small_config(data_dir=str(tmp_path / "tfds")),
                                        str(tmp_path / "run"))
    assert not (tmp_path / "run" / "metrics.jsonl").exists()
