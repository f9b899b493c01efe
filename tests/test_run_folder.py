"""The run folder's promises (`vae_jax.app.run_folder`): one writer at a time; readers that change
nothing, even while a save is in flight; folders that cannot be written found before training; a
save that fails mid-run ends the run at once with one line, and the next run resumes exactly;
readers skip a damaged latest checkpoint as training does."""

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

import vae_jax
from conftest import REPO, assert_one_line_error
from mock_train import assert_bit_identical, mocked_mnist, restore_latest, small_config, train
from test_reliability import (  # pylint: disable=unused-import  (the fixture_* are fixtures)
    LAST, MOCK_TRAIN, NUM_EPOCHS, STEPS_PER_EPOCH, Training, _snapshot, _truncate,
    checkpoint_steps, fixture_collect_garbage, fixture_reference, fixture_run_copy,
    metrics_lines, metrics_without_times, orbax_abandoned_reads, saving)
from vae_jax.app import evaluation, plots, run_folder, runs, sweep, training

TRAIN = str(REPO / "scripts" / "train.py")
EVALUATE = str(REPO / "scripts" / "evaluate.py")
TMP_SAVE = "999.orbax-checkpoint-tmp"


def _state(folder: str) -> dict:
    """Every path under `folder` (folders too) with its contents and modification time."""
    state = {}
    for root, folders, names in os.walk(folder):
        for name in folders:
            path = os.path.join(root, name)
            state[os.path.relpath(path, folder) + "/"] = os.stat(path).st_mtime_ns
    state.update({path: (content, os.stat(os.path.join(folder, path)).st_mtime_ns)
                  for path, content in _snapshot(folder).items()})
    return state


def _env(tmp_path) -> dict:
    return {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(REPO),
            "JAX_COMPILATION_CACHE_DIR": str(tmp_path / "jax_cache"),
            "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
            "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0"}


# --- Readers change nothing ---------------------------------------------------------------------


def _read_everything(workdir: str, data_dir: str, out: str) -> None:
    """Everything a reader does with a run folder: what evaluate.py and visualize.py call."""
    with mocked_mnist():
        runs.load_config(workdir)
        runs.load_run(workdir, data_dir=data_dir)
        evaluation.evaluate_workdir(workdir, num_samples=2, data_dir=data_dir, progress=False)
        plots.visualize_workdir(workdir, out_dir=out, data_dir=data_dir)


def test_readers_leave_a_save_in_progress_and_everything_else_alone(reference, run_copy,
                                                                    tmp_path):
    planted = os.path.join(run_copy, training.CHECKPOINT_DIR, TMP_SAVE, "state")
    os.makedirs(planted)
    open(os.path.join(planted, "f"), "w", encoding="utf-8").close()
    before = _state(run_copy)
    _read_everything(run_copy, reference[1], str(tmp_path / "plots"))
    after = _state(run_copy)
    assert os.path.exists(os.path.join(planted, "f"))
    # The one file a reader writes is the report it was asked for.
    assert set(after) - set(before) == {evaluation.EVAL_FILE}
    del after[evaluation.EVAL_FILE]
    assert after == before


def test_a_reader_during_a_real_save_does_not_disturb_it(reference, tmp_path):
    workdir, data_dir = str(tmp_path / "run"), reference[1]
    with open(tmp_path / "stderr.log", "w", encoding="utf-8") as log:
        run = Training(workdir, data_dir, _env(tmp_path), log)
        # Paused in the middle of its second save: the temporary folder is there.
        run.kill_when(lambda r: checkpoint_steps(workdir) and saving(workdir),
                      sig=signal.SIGSTOP)
        try:
            in_flight = sorted(n for n in os.listdir(os.path.join(workdir, "checkpoints"))
                               if "tmp" in n)
            _read_everything(workdir, data_dir, str(tmp_path / "plots"))
            assert sorted(n for n in os.listdir(os.path.join(workdir, "checkpoints"))
                          if "tmp" in n) == in_flight
        finally:
            run.process.send_signal(signal.SIGCONT)
        assert run.process.wait(timeout=240) == 0, (tmp_path / "stderr.log").read_text()[-3000:]
    config = small_config(num_epochs=NUM_EPOCHS)
    assert_bit_identical(restore_latest(workdir, config), restore_latest(reference[0], config))
    assert metrics_without_times(workdir) == metrics_without_times(reference[0])


# --- One writer ---------------------------------------------------------------------------------


def test_a_second_writer_is_refused_with_the_holder_named(reference, run_copy):
    before = _snapshot(run_copy)
    with run_folder.lock(run_copy):
        with mocked_mnist(), pytest.raises(vae_jax.WorkdirError,
                                           match=rf"workdir '{run_copy}' is being written by "
                                                 rf"process {os.getpid()} on .*; a run folder has "
                                                 "one writer at a time"):
            training.train_and_evaluate(
                small_config(num_epochs=NUM_EPOCHS + 1, data_dir=reference[1]), run_copy)
        with mocked_mnist(), pytest.raises(vae_jax.WorkdirError, match="is being written by"):
            sweep.train_sweep(small_config(data_dir=reference[1]),
                              sweep.parse_sweep(["beta=1,2"]), run_copy)
    assert _snapshot(run_copy) == before
    train(run_copy, NUM_EPOCHS + 1, reference[1])  # the lock is released with its holder
    assert len(metrics_lines(run_copy)) == NUM_EPOCHS + 1


def test_train_py_on_a_folder_another_process_writes_is_one_line(tmp_path):
    workdir = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom vae_jax import run_folder\n"
         f"with run_folder.lock({str(workdir)!r}):\n    print('locked', flush=True)\n"
         "    sys.stdin.read()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=_env(tmp_path))
    try:
        assert holder.stdout.readline() == "locked\n"
        result = subprocess.run([sys.executable, TRAIN, f"--workdir={workdir}"],
                                capture_output=True, text=True, timeout=120, check=False)
        assert_one_line_error(result, f"is being written by process {holder.pid} on ")
    finally:
        holder.communicate("", timeout=60)
    assert sorted(os.listdir(workdir)) == [run_folder.LOCK_FILE]


# --- Folders that cannot be written -------------------------------------------------------------


@contextlib.contextmanager
def unwritable(path: str, attribute: str = "i"):
    """`path` made unwritable for this process: immutable (chattr +i), or append-only with
    `attribute` "a", as root; read-only (chmod a-w) otherwise; skips the test where neither takes
    effect."""
    if os.geteuid() == 0:
        if subprocess.run(["chattr", f"+{attribute}", path], capture_output=True,
                          check=False).returncode:
            pytest.skip("chattr is not available here (root ignores permission bits)")
        undo = ["chattr", f"-{attribute}", path]
    else:
        mode = os.stat(path).st_mode
        os.chmod(path, mode & ~0o222)
        undo = None
    try:
        yield
    finally:
        if undo:
            subprocess.run(undo, check=True)
        else:
            os.chmod(path, mode)


OLDEST = STEPS_PER_EPOCH * (NUM_EPOCHS - 2)  # the checkpoint the next save deletes


@pytest.mark.parametrize("target,attribute", [
    ("checkpoints", "i"), ("images", "i"), (f"checkpoints/{OLDEST}", "i"),
    (f"checkpoints/{OLDEST}", "a"),  # files can be added, not deleted
    (f"checkpoints/{OLDEST}/commit_success.txt", "i"),  # one file Orbax must delete
    ("metrics.jsonl", "i"), ("config.json", "a")])
def test_a_folder_or_file_training_cannot_write_is_an_error_before_training(
        target, attribute, reference, run_copy):
    if attribute == "a" and os.geteuid() != 0:
        pytest.skip("append-only needs root (chattr +a)")
    path = os.path.normpath(os.path.join(run_copy, target))
    before = _snapshot(run_copy)
    with unwritable(path, attribute), mocked_mnist(), pytest.raises(
            vae_jax.WorkdirError, match=f"{path} is not writable .* use another --workdir"):
        training.train_and_evaluate(
            small_config(num_epochs=NUM_EPOCHS + 1, data_dir=reference[1]), run_copy)
    assert _snapshot(run_copy) == before


@pytest.mark.skipif(os.geteuid() != 0, reason="chattr needs root")
def test_an_old_checkpoint_that_cannot_be_deleted_mid_run_is_named(reference, run_copy,
                                                                   monkeypatch):
    # The start-up check would find it; here it appears after that check, as mid-run.
    monkeypatch.setattr(run_folder, "check_writable", lambda workdir: None)
    blocked = os.path.join(run_copy, training.CHECKPOINT_DIR, str(OLDEST), "commit_success.txt")
    with unwritable(blocked), mocked_mnist(), pytest.raises(
            vae_jax.CheckpointError,
            match=rf"checkpoint {LAST + STEPS_PER_EPOCH} was saved in .*, but checkpoint\(s\) "
                  rf"{OLDEST} could not be deleted \(max_to_keep=3; .*\); stopped: make them "
                  rf"deletable and run the same command again to resume from checkpoint "
                  rf"{LAST + STEPS_PER_EPOCH}"):
        training.train_and_evaluate(
            small_config(num_epochs=NUM_EPOCHS + 1, data_dir=reference[1]), run_copy)
    monkeypatch.undo()
    train(run_copy, NUM_EPOCHS + 2, reference[1])
    assert checkpoint_steps(run_copy) == [LAST, LAST + STEPS_PER_EPOCH, LAST + 2 * STEPS_PER_EPOCH]


def test_train_py_names_an_unwritable_checkpoints_folder_at_once(tmp_path):
    folder = tmp_path / "run" / "checkpoints"
    folder.mkdir(parents=True)
    with unwritable(str(folder)):
        result = subprocess.run([sys.executable, TRAIN, f"--workdir={tmp_path / 'run'}"],
                                capture_output=True, text=True, timeout=120, check=False)
    assert_one_line_error(result, f"{folder} is not writable")


def test_a_save_that_fails_mid_run_stops_at_once_and_the_next_run_resumes(reference, tmp_path):
    workdir, data_dir = str(tmp_path / "run"), reference[1]
    folder = os.path.join(workdir, training.CHECKPOINT_DIR)
    with open(tmp_path / "stderr.log", "w+", encoding="utf-8") as log:
        run = Training(workdir, data_dir, _env(tmp_path), log)
        run.kill_when(lambda r: checkpoint_steps(workdir) and not saving(workdir),
                      sig=signal.SIGSTOP)
        kept = checkpoint_steps(workdir)
        # The completed checkpoints (a save may have begun just before the pause: its temporary
        # folder can still take files, as the folder above it is what becomes unwritable).
        intact = [_snapshot(os.path.join(folder, str(step))) for step in kept]
        with unwritable(folder):
            run.process.send_signal(signal.SIGCONT)
            start = time.monotonic()
            returncode = run.process.wait(timeout=240)
            seconds = time.monotonic() - start
        log.seek(0)
        stderr = log.read()
    result = subprocess.CompletedProcess([], returncode, "", stderr)
    assert_one_line_error(result, "could not save checkpoint")
    assert f"the checkpoint at step {kept[-1]} is kept" in stderr.splitlines()[-1]
    assert seconds < 60 and len(stderr.splitlines()) < 10, stderr[-3000:]
    assert checkpoint_steps(workdir) == kept
    assert [_snapshot(os.path.join(folder, str(step))) for step in kept] == intact

    finished = subprocess.run([sys.executable, MOCK_TRAIN, workdir, str(NUM_EPOCHS), data_dir],
                              capture_output=True, text=True, env=_env(tmp_path), timeout=240,
                              check=False)
    assert finished.returncode == 0, finished.stderr[-3000:]
    assert f"Resuming from the checkpoint at step {kept[-1]}" in finished.stdout
    config = small_config(num_epochs=NUM_EPOCHS)
    assert_bit_identical(restore_latest(workdir, config), restore_latest(reference[0], config))
    assert metrics_without_times(workdir) == metrics_without_times(reference[0])


def test_a_read_only_run_folder_is_evaluated_and_pictures_need_another_folder(
        reference, run_copy, capsys):
    before = _state(run_copy)
    with unwritable(run_copy), mocked_mnist():
        report = evaluation.evaluate_workdir(run_copy, num_samples=2, data_dir=reference[1],
                                             progress=False)
        with pytest.raises(vae_jax.ConfigError, match=f"cannot write the pictures to "
                                                      f"{run_copy}/plots .*; pass --out=FOLDER"):
            plots.visualize_workdir(run_copy, data_dir=reference[1])
    assert report["step"] == LAST
    assert "cannot be written (read-only); the report is only returned" in capsys.readouterr().err
    assert _state(run_copy) == before


# --- Readers and damaged checkpoints ------------------------------------------------------------


@orbax_abandoned_reads
def test_readers_skip_a_damaged_latest_checkpoint_and_leave_it_in_place(reference, run_copy,
                                                                        capsys):
    _truncate(os.path.join(run_copy, training.CHECKPOINT_DIR, str(LAST)))
    before = _snapshot(run_copy)
    previous = LAST - STEPS_PER_EPOCH
    with mocked_mnist():
        report = evaluation.evaluate_workdir(run_copy, num_samples=2, data_dir=reference[1],
                                             progress=False)
    assert report["step"] == previous
    (warning,) = capsys.readouterr().err.strip().splitlines()
    assert warning.startswith(f"warning: checkpoint {LAST} is damaged: cannot read its arrays")
    assert warning.endswith("left it in place (training moves it aside when it resumes) and "
                            f"loaded checkpoint {previous}")
    after = _snapshot(run_copy)
    del after[evaluation.EVAL_FILE]
    assert after == before

    with mocked_mnist(), pytest.raises(
            vae_jax.CheckpointError,
            match=rf"checkpoint {LAST} in .* is damaged: cannot read its arrays .*; intact "
                  rf"checkpoints: steps {previous}, {previous - STEPS_PER_EPOCH} \(pass one as "
                  r"--step"):
        runs.load_run(run_copy, step=LAST, data_dir=reference[1])


@pytest.mark.parametrize("make,message", [
    (lambda tmp: tmp / "a_file", "is not a directory: pass the folder of a training run"),
    (lambda tmp: tmp / "missing", "does not exist"),
    (lambda tmp: tmp, "no checkpoint in"),
])
def test_evaluate_py_on_what_is_not_a_run_folder_is_one_line(make, message, tmp_path):
    (tmp_path / "a_file").write_text("not a folder")
    workdir = make(tmp_path)
    result = subprocess.run([sys.executable, EVALUATE, f"--workdir={workdir}"],
                            capture_output=True, text=True, timeout=120, check=False)
    assert_one_line_error(result, message)
