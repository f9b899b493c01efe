"""The run folder's promises (`vae_jax.app.run_folder`): its files written atomically and read
in one place; one writer at a time; readers that change nothing, even while a save is in flight,
and restore params without an optimizer; folders that cannot be written found before training; a
save that fails mid-run ends the run at once with one line, and the next run resumes exactly;
readers skip a damaged latest checkpoint as training does."""

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import jax
import ml_collections
import numpy as np
import pytest
from PIL import Image

import vae_jax
from conftest import REPO, assert_one_line_error
from mock_train import assert_bit_identical, mocked_mnist, restore_latest, small_config, train
from test_reliability import (  # pylint: disable=unused-import  (the fixture_* are fixtures)
    LAST, MOCK_TRAIN, NUM_EPOCHS, STEPS_PER_EPOCH, Training, _snapshot, _truncate,
    checkpoint_steps, fixture_collect_garbage, fixture_reference, fixture_run_copy,
    metrics_lines, metrics_without_times, orbax_abandoned_reads, saving)
from vae_jax.app import (builders, checkpointing, configs, evaluation, plots, run_folder, runs,
                         sweep, training)

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


# --- The files, written and read in one place ---------------------------------------------------


def test_files_are_replaced_atomically_and_config_json_is_the_config(tmp_path):
    path = str(tmp_path / "report.json")
    run_folder.write_json(path, {"a": [1, 2], "b": None})
    assert json.loads((tmp_path / "report.json").read_text()) == {"a": [1, 2], "b": None}
    assert (tmp_path / "report.json").read_text() == json.dumps({"a": [1, 2], "b": None},
                                                                indent=2)
    run_folder.write_atomically(path, "new")
    assert (tmp_path / "report.json").read_text() == "new"
    assert sorted(os.listdir(tmp_path)) == ["report.json"]  # no temporary file left
    config = configs.get_default()
    run_folder.write_config(str(tmp_path), config)
    saved = (tmp_path / run_folder.CONFIG_FILE).read_text()
    assert saved == config.to_json(indent=2)
    assert ml_collections.ConfigDict(json.loads(saved)).latent_dim == config.latent_dim


def test_metrics_lines_are_appended_read_and_truncated_past_a_cut_line(tmp_path):
    workdir = str(tmp_path)
    assert run_folder.read_metrics(workdir) == []
    run_folder.truncate_metrics(workdir, 0)  # no file: nothing to do, nothing created
    assert not os.listdir(workdir)
    for step in (4, 8, 12):
        run_folder.append_metrics(workdir, {"step": step, "epoch": step // 4, "test_kl": 1.5})
    path = tmp_path / run_folder.METRICS_FILE
    with open(path, "a", encoding="utf-8") as f:
        f.write('{"step": 16, "epo')  # a run killed mid-write
    assert [r["step"] for r in run_folder.read_metrics(workdir)] == [4, 8, 12]
    assert run_folder.read_metrics(workdir)[0] == {"step": 4, "epoch": 1, "test_kl": 1.5}
    before = path.read_text()
    run_folder.truncate_metrics(workdir, 12)  # drops only the cut line
    assert path.read_text() == before[:before.index('{"step": 16')]
    run_folder.truncate_metrics(workdir, 4)  # the epochs after checkpoint 4 are redone
    assert [r["step"] for r in run_folder.read_metrics(workdir)] == [4]
    run_folder.truncate_metrics(workdir, 0)
    assert path.read_text() == "" and run_folder.read_metrics(workdir) == []
    assert sorted(os.listdir(workdir)) == [run_folder.METRICS_FILE]


def _cells(path, rows, columns, size=6, padding=2, scale=2):
    """The grey level of the centre of each cell of a picture that `images.save_grid` wrote."""
    with Image.open(path) as picture:
        pixels = np.asarray(picture.convert("L"), np.float32) / 255.0
    centre = lambda i: scale * (padding + i * (size + padding) + size // 2)  # noqa: E731
    return np.array([[pixels[centre(r), centre(c)] for c in range(columns)]
                     for r in range(rows)])


def test_pictures_interleave_inputs_and_reconstructions_row_by_row(tmp_path):
    # Inputs of grey level (n + 1)/100, their reconstructions that plus 0.5; 6×6 pixels.
    levels = (np.arange(32, dtype=np.float32) + 1) / 100
    inputs = np.broadcast_to(levels[:, None, None, None], (32, 6, 6, 1))
    samples = np.broadcast_to(np.linspace(0, 1, 64, dtype=np.float32)[:, None, None, None],
                              (64, 6, 6, 1))
    run_folder.save_pictures(str(tmp_path), 3, inputs, inputs + 0.5, samples)
    folder = tmp_path / run_folder.IMAGES_DIR
    assert sorted(os.listdir(folder)) == ["reconstructions_epoch003.png", "samples_epoch003.png"]
    cells = _cells(folder / "reconstructions_epoch003.png", rows=8, columns=8)
    expected = np.concatenate([np.stack([levels[8 * i:8 * i + 8], levels[8 * i:8 * i + 8] + 0.5])
                               for i in range(4)])
    np.testing.assert_allclose(cells, expected, atol=1 / 255)
    np.testing.assert_allclose(_cells(folder / "samples_epoch003.png", rows=8, columns=8),
                               np.linspace(0, 1, 64).reshape(8, 8), atol=1 / 255)
    with pytest.raises(ValueError, match="must have one shape"):
        run_folder.save_pictures(str(tmp_path), 4, inputs, inputs[:8], samples)


def test_checkpoint_steps_and_resolve_step(tmp_path):
    workdir = str(tmp_path / "run")
    with pytest.raises(vae_jax.CheckpointError, match="does not exist"):
        run_folder.resolve_step(workdir)
    os.makedirs(os.path.join(workdir, run_folder.CHECKPOINT_DIR))
    with pytest.raises(vae_jax.CheckpointError,
                       match="no checkpoint in .*: train first with scripts/sweep.py"):
        run_folder.resolve_step(workdir, trainer="scripts/sweep.py")
    for name in ("8", "4", "12.damaged", "16.orbax-checkpoint-tmp-1"):
        os.makedirs(os.path.join(workdir, run_folder.CHECKPOINT_DIR, name))
    assert run_folder.checkpoint_steps(workdir) == [4, 8] == runs.checkpoint_steps(workdir)
    assert run_folder.resolve_step(workdir) == 8 and run_folder.resolve_step(workdir, 4) == 4
    with pytest.raises(vae_jax.CheckpointError, match="no checkpoint at step 12 .* steps 4, 8"):
        run_folder.resolve_step(workdir, 12)


def test_free_space_for_the_checkpoints_is_checked_first(tmp_path, monkeypatch):
    tree = {"params": np.zeros((256, 1024), np.float32)}  # 1 MiB
    run_folder.check_free_space(str(tmp_path), tree, 3)
    usage = shutil.disk_usage(str(tmp_path))._replace(free=32 * 2**20)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage)
    with pytest.raises(vae_jax.ConfigError,
                       match=r"has 32 MiB free but the run needs about 68 MiB \(4 checkpoints of "
                             r"1.0 MiB\); free space or lower --config.max_to_keep"):
        run_folder.check_free_space(str(tmp_path), tree, 3)


def _save_state(workdir, vae, config, step=4, digests=None, monkeypatch=None):
    """A checkpoint at `step` of the layout training saves, with `vae`'s params and Adam's
    state; returns the params."""
    params = vae.init(jax.random.key(1))
    optimizer = builders.optimizer(config, 4)
    state = training.TrainState(params, optimizer.init(params), np.int32(step), jax.random.key(0))
    if digests is not None:
        monkeypatch.setattr(checkpointing, "_digests", digests)
    writer = run_folder.checkpointer(workdir, 3)
    with contextlib.closing(writer):
        writer.save(step, training.to_checkpoint(state), config)
    return params


@pytest.mark.slow
def test_a_reader_restores_the_params_alone_and_checks_them(tmp_path, monkeypatch):
    config = configs.get_default()
    config.update(hidden_dims=(8,), latent_dim=2)
    vae = builders.model(config, (6, 6, 1))
    workdir = str(tmp_path / "run")
    params = _save_state(workdir, vae, config)
    before = _state(workdir)
    reader = run_folder.checkpointer(workdir, read_only=True)
    with contextlib.closing(reader):
        restored = runs.restore_params(reader, 4, vae)
        other = builders.model(ml_collections.ConfigDict({**config.to_dict(), "latent_dim": 3}),
                               (6, 6, 1))
        with pytest.raises(vae_jax.CheckpointError,
                           match=r"checkpoint 4 in .* holds a model of another shape: "
                                 r"\['decoder'\]\['Dense_0'\]\['kernel'\] saved \(2, 8\) but "
                                 r"this model has \(3, 8\)"):
            runs.restore_params(reader, 4, other)
        with pytest.raises(vae_jax.CheckpointError, match="opened read-only; cannot save"):
            reader.save(8, {"params": params}, config)
    assert_bit_identical(restored, params)
    assert _state(workdir) == before  # the reader changed nothing

    # The params are checked against their own digest; a checkpoint without one (written before
    # it existed) is read all the same.
    digests = checkpointing._digests  # pylint: disable=protected-access
    _save_state(str(tmp_path / "altered"), vae, config, digests=lambda state: {
        **digests(state), "params_sha256": "0" * 64}, monkeypatch=monkeypatch)
    _save_state(str(tmp_path / "old"), vae, config, digests=lambda state: {
        "sha256": digests(state)["sha256"]}, monkeypatch=monkeypatch)
    for name, damaged in (("altered", True), ("old", False)):
        reader = run_folder.checkpointer(str(tmp_path / name), read_only=True)
        with contextlib.closing(reader):
            if damaged:
                with pytest.raises(vae_jax.DamagedCheckpointError,
                                   match="its arrays differ from the digest saved with them"):
                    runs.restore_params(reader, 4, vae)
            else:
                assert_bit_identical(runs.restore_params(reader, 4, vae), params)


# --- Readers change nothing ---------------------------------------------------------------------


def _read_everything(workdir: str, data_dir: str, out: str) -> None:
    """Everything a reader does with a run folder: what evaluate.py and visualize.py call."""
    with mocked_mnist():
        runs.load_config(workdir)
        runs.load_run(workdir, data_dir=data_dir)
        evaluation.evaluate_workdir(workdir, num_samples=2, data_dir=data_dir, progress=False)
        plots.visualize_workdir(workdir, out_dir=out, data_dir=data_dir)


@pytest.mark.slow
def test_readers_leave_a_save_in_progress_and_everything_else_alone(reference, run_copy,
                                                                    tmp_path):
    planted = os.path.join(run_copy, run_folder.CHECKPOINT_DIR, TMP_SAVE, "state")
    os.makedirs(planted)
    open(os.path.join(planted, "f"), "w", encoding="utf-8").close()
    before = _state(run_copy)
    _read_everything(run_copy, reference[1], str(tmp_path / "plots"))
    after = _state(run_copy)
    assert os.path.exists(os.path.join(planted, "f"))
    # The one file a reader writes is the report it was asked for.
    assert set(after) - set(before) == {run_folder.EVAL_FILE}
    del after[run_folder.EVAL_FILE]
    assert after == before


@pytest.mark.slow
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


@pytest.mark.slow
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


def test_a_refused_run_leaves_no_lock_and_no_folder_it_made(tmp_path):
    from test_in_memory import tiny_config, tiny_dataset  # pylint: disable=import-outside-toplevel

    too_large = tiny_config(batch_size=100_000)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("kept")
    empty = tmp_path / "empty"
    empty.mkdir()
    held = tmp_path / "held"  # a folder whose lock file was there before: left as it was
    held.mkdir()
    (held / run_folder.LOCK_FILE).write_text("")
    for workdir in (tmp_path / "new" / "run", mine, empty, held):
        with pytest.raises(vae_jax.ConfigError, match="is larger than the"):
            training.train_and_evaluate(too_large, str(workdir), tiny_dataset())
    assert sorted(os.listdir(tmp_path)) == ["empty", "held", "mine"]
    assert os.listdir(mine) == ["notes.txt"] and os.listdir(empty) == []
    assert os.listdir(held) == [run_folder.LOCK_FILE]


@pytest.mark.slow
def test_train_py_on_a_folder_another_process_writes_is_one_line(tmp_path):
    workdir = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom vae_jax.app import run_folder\n"
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
    assert not workdir.exists()  # the refused run left it alone; its maker, who added nothing,
    # took the folder and its lock away


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
@pytest.mark.slow
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


@pytest.mark.slow
@pytest.mark.skipif(os.geteuid() != 0, reason="chattr needs root")
def test_an_old_checkpoint_that_cannot_be_deleted_mid_run_is_named(reference, run_copy,
                                                                   monkeypatch):
    # The start-up check would find it; here it appears after that check, as mid-run.
    monkeypatch.setattr(run_folder, "check_writable", lambda workdir: None)
    blocked = os.path.join(run_copy, run_folder.CHECKPOINT_DIR, str(OLDEST), "commit_success.txt")
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


def _entries(folder: str) -> dict[str, tuple[int, int]]:
    """Every entry under `folder` (links and pipes not followed nor opened): its mode and size."""
    entries = {}
    for root, folders, files in os.walk(folder):
        for name in folders + files:
            status = os.lstat(os.path.join(root, name))
            entries[os.path.relpath(os.path.join(root, name), folder)] = (status.st_mode,
                                                                          status.st_size)
    return entries


def _make_wrong_kind(path: str, kind: str, is_folder: bool) -> None:
    """Puts at `path` something that is not what training writes there."""
    if kind == "other kind":
        if is_folder:
            with open(path, "w", encoding="utf-8") as file:
                file.write("not a folder")
        else:
            os.mkdir(path)
            with open(os.path.join(path, "inside"), "w", encoding="utf-8") as file:
                file.write("kept")
    elif kind == "broken link":
        os.symlink(os.path.join(os.path.dirname(path), "nowhere"), path)
    else:
        os.mkfifo(path)


WRONG_KINDS = ("other kind", "broken link", "named pipe")


@pytest.mark.parametrize("name,is_folder,kind", [
    *((name, True, kind) for name in run_folder.WRITTEN_FOLDERS for kind in WRONG_KINDS),
    *((name, False, kind) for name in run_folder.WRITTEN_FILES for kind in WRONG_KINDS),
    # The run folder itself (a file there: check_folder's own message, test_reliability.py).
    *(("", True, kind) for kind in WRONG_KINDS[1:])])
def test_a_path_of_the_wrong_kind_is_told_to_move_not_to_chmod(name, is_folder, kind, tmp_path):
    workdir = str(tmp_path / "run")
    path = os.path.join(workdir, name) if name else workdir
    if name:
        os.mkdir(workdir)
    _make_wrong_kind(path, kind, is_folder)
    before = _entries(str(tmp_path))
    want = "a folder" if is_folder else "a file"
    found = {"other kind": "a file" if is_folder else "a folder",
             "broken link": "a broken symbolic link (to ",
             "named pipe": "neither a file nor a folder"}[kind]
    with pytest.raises(vae_jax.WorkdirError) as error:
        run_folder.check_writable(workdir)
    message = str(error.value)
    assert message.startswith(f"{path} is {found}"), message
    assert f"but training writes {want} there; move it away" in message
    assert "chmod" not in message and "chattr" not in message
    assert _entries(str(tmp_path)) == before


@pytest.mark.slow
def test_train_py_names_a_tensorboard_file_where_the_folder_goes(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "tensorboard").write_text("a file")
    result = subprocess.run([sys.executable, TRAIN, f"--workdir={tmp_path / 'run'}"],
                            capture_output=True, text=True, timeout=120, check=False)
    assert_one_line_error(result, f"{tmp_path / 'run' / 'tensorboard'} is a file, but training "
                                  "writes a folder there; move it away")


@pytest.mark.slow
def test_a_save_that_fails_mid_run_stops_at_once_and_the_next_run_resumes(reference, tmp_path):
    workdir, data_dir = str(tmp_path / "run"), reference[1]
    folder = os.path.join(workdir, run_folder.CHECKPOINT_DIR)
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


@pytest.mark.slow
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


@pytest.mark.slow
@orbax_abandoned_reads
def test_readers_skip_a_damaged_latest_checkpoint_and_leave_it_in_place(reference, run_copy,
                                                                        capsys):
    _truncate(os.path.join(run_copy, run_folder.CHECKPOINT_DIR, str(LAST)))
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
    del after[run_folder.EVAL_FILE]
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
