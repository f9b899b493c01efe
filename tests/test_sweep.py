"""Sweeps as one vmapped program: each member equals the single run it stands for, under jit and
on several devices; sweeps resume; bad specifications are clear errors; members extract into run
folders that evaluate."""

import json
import os
import re
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

import vae_jax
from conftest import REPO
from mock_train import mocked_mnist, small_config
from vae_jax.app import builders, evaluation, run_folder, runs, sweep as sweep_lib, training

SHAPE = (28, 28, 1)
STEPS_PER_EPOCH = 4  # mock_train.NUM_EXAMPLES / batch size 16
# Three members differing in β, learning rate and seed (zipped).
SPECS = ["beta=1,2,0.5", "learning_rate=1e-3,3e-3,2e-3", "seed=0,1,2"]


def assert_trees_close(actual, expected, rtol=1e-5, atol=1e-6):
    for a, b in zip(jax.tree.leaves(actual), jax.tree.leaves(expected), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=rtol, atol=atol)


def read_lines(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


# --- Specifications --------------------------------------------------------------------------

def test_grid_is_the_cartesian_product_first_field_slowest_and_zip_pairs_values():
    grid = sweep_lib.parse_sweep(["beta=1,2", "learning_rate=1e-3,3e-3,1e-2"])
    assert grid.size == 6 and grid.fields == ("beta", "learning_rate")
    assert grid.values[:3] == ((1.0, 1e-3), (1.0, 3e-3), (1.0, 1e-2))
    assert grid.label(5) == "beta=2, learning_rate=0.01"
    zipped = sweep_lib.parse_sweep("beta=1,2; seed=3,4", mode="zip")
    assert zipped.values == ((1.0, 3), (2.0, 4)) and isinstance(zipped.values[0][1], int)
    assert sweep_lib.Sweep.from_json(zipped.to_json()) == zipped
    member = sweep_lib.member_config(small_config(), zipped, 1)
    assert (member.beta, member.seed, member.latent_dim) == (2.0, 4, 4)


@pytest.mark.parametrize("specs,mode,message", [
    (["betta=1,2"], "grid", r"unknown config field 'betta'; sweepable fields are beta, alpha"),
    (["beta=1,abc"], "grid", r"--sweep=beta=1,abc: 'abc' is not a number"),
    (["beta=1,nan"], "grid", r"'nan' is not a finite number"),
    (["latent_dim=2,4"], "grid", r"config.latent_dim cannot be swept: it changes the shapes"),
    (["hidden_dims=(8,),(16,)"], "grid", r"config.hidden_dims cannot be swept"),
    (["likelihood=1,2"], "grid", r"config.likelihood cannot be swept: all members of one program"),
    (["seed=0,0.5"], "grid", r"seed values must be non-negative integers, got '0.5'"),
    (["seed=-1"], "grid", r"seed values must be non-negative integers below 2\*\*63, got -1"),
    (["beta=1", "beta=2"], "grid", r"beta is swept twice"),
    (["beta=1,2", "alpha=1"], "zip", r"same number of values for every field, got beta: 2, "),
    (["beta="], "grid", r"no values for beta"),
    (["beta"], "grid", r"expected FIELD=V1,V2,..."),
    ([], "grid", r"no sweep given: pass --sweep=FIELD=V1,V2"),
    (["beta=1"], "random", r"the sweep mode must be one of \('grid', 'zip'\)"),
])
def test_bad_sweep_specifications_are_named(specs, mode, message):
    with pytest.raises(vae_jax.ConfigError, match=message):
        sweep_lib.parse_sweep(specs, mode)


def test_a_member_out_of_range_is_named_before_any_work(tmp_path):
    sweep = sweep_lib.parse_sweep("beta=1,-2")
    with pytest.raises(vae_jax.ConfigError,
                       match=r"sweep member 1 \(beta=-2\): config.beta must be a non-negative"):
        sweep_lib.train_sweep(small_config(), sweep, str(tmp_path / "run"))
    assert not os.path.exists(tmp_path / "run")
    iwae = small_config(objective="iwae")
    with pytest.raises(vae_jax.ConfigError, match=r"member 0 \(beta=2\).*objective='iwae'"):
        sweep_lib.member_configs(iwae, sweep_lib.parse_sweep("beta=2"))


def test_the_command_line_reports_bad_specs_in_one_line(tmp_path):
    result = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "sweep.py"), f"--workdir={tmp_path / 'run'}",
         "--sweep=latent_dim=2,4"], capture_output=True, text=True, cwd=REPO, check=False)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        result.stderr.strip().splitlines()[0]]  # one line
    assert result.stderr.startswith("error: --sweep=latent_dim=2,4: config.latent_dim cannot be "
                                    "swept")
    assert not os.path.exists(tmp_path / "run")


@pytest.mark.parametrize("overrides,specs,message", [
    ({}, ["alpha=1,2"], r"alpha has no effect with likelihood='bernoulli' \(only mse, rmse"),
    ({"likelihood": "mse"}, ["gaussian_sigma=1,2"], "gaussian_sigma has no effect with likel"),
    ({}, ["beta=1,1"], r"members 0 and 1 are the same model \(beta=1\)"),
])
def test_sweeps_that_would_train_the_same_model_twice_are_refused(overrides, specs, message):
    with pytest.raises(vae_jax.ConfigError, match=message):
        sweep_lib.member_configs(small_config(**overrides), sweep_lib.parse_sweep(specs))


# --- Each member is its single run ------------------------------------------------------------

def sweep_state(members):
    """The stacked initial state of `members`, each as its single run starts."""
    return training.stack([training.initial_state(c, SHAPE, STEPS_PER_EPOCH) for c in members])


def single_model_result(config, images, epoch=1):
    """Params and metrics of `config`'s model after one epoch of `training.make_train_steps` on
    `images`, started as `training.train_and_evaluate` starts it."""
    state = training.initial_state(config, SHAPE, STEPS_PER_EPOCH)
    indices = training.epoch_batch_indices(builders.run_keys(config).shuffle, epoch,
                                           len(images), config.batch_size)
    train_steps = training.make_train_steps(config, SHAPE, STEPS_PER_EPOCH)
    state, metrics, divergence = train_steps(state, {}, images, indices)
    assert int(divergence.step) == 0
    return jax.device_get(state), jax.device_get(metrics)


@pytest.mark.slow
@pytest.mark.parametrize("overrides,specs", [
    ({}, SPECS + ["free_bits=0,0.1,0.2"]),
    ({"likelihood": "mse", "lr_schedule": "cosine", "kl_warmup_steps": 3},
     ["alpha=100,1000,300", "learning_rate=1e-3,1e-2,3e-3", "beta=1,1,4"]),
    ({"likelihood": "gaussian", "binarize": False}, ["gaussian_sigma=1,0.5,0.2", "seed=0,0,5"]),
])
def test_every_member_of_a_jitted_sweep_equals_its_single_model(overrides, specs):
    """Batched and single matmuls sum in different orders, so members agree to float rounding.
    (With α = 1 the mse gradients of a few weights are at rounding level, where Adam's g/√v
    turns rounding into learning-rate-sized steps; hence α ≥ 100 here.)"""
    config = small_config(**overrides)
    sweep = sweep_lib.parse_sweep(specs, mode="zip")
    members = sweep_lib.member_configs(config, sweep)
    images = np.asarray(jax.random.randint(jax.random.key(1), (64, *SHAPE), 0, 256), np.uint8)
    states = sweep_state(members)
    keys = jax.vmap(builders.RunKeys.from_root)(states.key)
    indices = training.member_batch_indices(keys.shuffle, 1, 64, 16)
    assert indices.shape == (STEPS_PER_EPOCH, 3, 16)
    train_steps = training.make_train_steps(config, SHAPE, STEPS_PER_EPOCH, models=True)
    states, metrics, divergence = train_steps(states, sweep_lib.hyperparameters(sweep), images,
                                              indices)
    assert divergence.step.shape == (3,) and not np.any(divergence.step)
    assert all(m.shape == (3,) for m in metrics.values())
    for i, member in enumerate(members):
        single_state, single_metrics = single_model_result(member, images)
        assert_trees_close(training.unstack(states.params, i), single_state.params)
        assert_trees_close(training.unstack(states.opt_state, i), single_state.opt_state)
        assert int(states.step[i]) == int(single_state.step) == STEPS_PER_EPOCH
        np.testing.assert_array_equal(jax.random.key_data(states.key[i]),
                                      jax.random.key_data(single_state.key))
        assert_trees_close({k: v[i] for k, v in metrics.items()}, single_metrics)


@pytest.mark.slow
def test_per_member_data_orders_are_the_single_runs_orders_at_full_mnist_size():
    keys = jax.vmap(lambda s: builders.RunKeys.from_root(jax.random.key(s)).shuffle)(
        np.arange(3))
    indices = training.member_batch_indices(keys, 2, 60_000, 128)
    for seed in range(3):
        single = training.epoch_batch_indices(
            builders.RunKeys.from_root(jax.random.key(seed)).shuffle, 2, 60_000, 128)
        np.testing.assert_array_equal(indices[:, seed], single)


@pytest.fixture(name="trained", scope="module")
def fixture_trained(tmp_path_factory):
    """A 3-member sweep trained 2 epochs on mocked MNIST, and the 3 single runs it stands for."""
    root = tmp_path_factory.mktemp("sweep")
    data_dir = str(root / "tfds")
    config = small_config(data_dir=data_dir, num_epochs=2)
    sweep = sweep_lib.parse_sweep(SPECS, mode="zip")
    with mocked_mnist():
        record = sweep_lib.train_sweep(config, sweep, str(root / "sweep"))
        singles = []
        for i, member in enumerate(sweep_lib.member_configs(config, sweep)):
            training.train_and_evaluate(member, str(root / f"single{i}"))
            singles.append(str(root / f"single{i}"))
    return {"root": root, "config": config, "sweep": sweep, "record": record,
            "workdir": str(root / "sweep"), "singles": singles}


@pytest.mark.slow
def test_sweep_writes_per_member_metrics_plot_pictures_and_a_checkpoint(trained):
    workdir = trained["workdir"]
    lines = run_folder.read_metrics(workdir)
    assert [(line["step"], line["epoch"]) for line in lines] == [(4, 1), (8, 2)]
    assert lines[-1] == trained["record"]
    assert all(len(lines[-1][k]) == 3 for k in ("train_loss", "test_neg_elbo", "kl_weight"))
    assert lines[-1]["kl_weight"] == [1.0, 2.0, 0.5]
    assert os.path.getsize(os.path.join(workdir, sweep_lib.RATE_DISTORTION_FILE)) > 0
    for i in range(3):
        assert sorted(os.listdir(os.path.join(workdir, "members", f"0{i}", "images"))) == [
            f"{kind}_epoch00{e}.png" for kind in ("reconstructions", "samples") for e in (1, 2)]
    assert runs.checkpoint_steps(workdir) == [4, 8]
    with open(os.path.join(workdir, sweep_lib.SWEEP_FILE), encoding="utf-8") as f:
        record = json.load(f)
    assert record["labels"][2] == "beta=0.5, learning_rate=0.002, seed=2"


@pytest.mark.slow
@pytest.mark.parametrize("overrides", [
    {"input_pipeline": "stream", "stream_chunk_mib": 0.1},  # 3 × 12.25 KiB a step: 2 steps a chunk
    {"train_loop": "step"},
])
def test_a_sweep_streams_and_steps_as_a_run_does_with_the_same_results(trained, tmp_path,
                                                                         overrides, capsys):
    """The sweep is the run's engine: its input pipelines and loops are there, unchanged."""
    config = small_config(num_epochs=2, data_dir=str(trained["root"] / "tfds"), **overrides)
    with mocked_mnist():
        sweep_lib.train_sweep(config, trained["sweep"], str(tmp_path / "sweep"))
    if "input_pipeline" in overrides:
        assert "Streaming the training set" in capsys.readouterr().out
    for line, expected in zip(run_folder.read_metrics(tmp_path / "sweep"),
                              run_folder.read_metrics(trained["workdir"]), strict=True):
        del line["epoch_time_s"], expected["epoch_time_s"]
        assert_trees_close(line, expected)


@pytest.mark.slow
def test_every_member_equals_its_single_run_end_to_end(trained):
    lines = run_folder.read_metrics(trained["workdir"])
    for i, single in enumerate(trained["singles"]):
        expected = read_lines(os.path.join(single, run_folder.METRICS_FILE))
        for line, single_line in zip(lines, expected, strict=True):
            member_line = {k: v[i] if isinstance(v, list) else v for k, v in line.items()}
            assert member_line.keys() == single_line.keys()
            del member_line["epoch_time_s"], single_line["epoch_time_s"]
            assert_trees_close(member_line, single_line)


@pytest.mark.slow
def test_extracted_members_are_run_folders_that_equal_the_single_runs_and_evaluate(trained):
    workdir = trained["workdir"]
    with mocked_mnist():
        for i, single in enumerate(trained["singles"]):
            member_dir = sweep_lib.extract_member(workdir, i)
            assert member_dir == os.path.join(workdir, "members", f"0{i}")
            assert runs.checkpoint_steps(member_dir) == [8]
            extracted, alone = runs.load_run(member_dir), runs.load_run(single)
            assert extracted.config == alone.config
            assert_trees_close(extracted.params, alone.params)
            with open(os.path.join(member_dir, "config.json"), encoding="utf-8") as f:
                assert json.load(f)["beta"] == [1.0, 2.0, 0.5][i]
            assert len(read_lines(os.path.join(member_dir, run_folder.METRICS_FILE))) == 2
        report = evaluation.evaluate_workdir(member_dir, num_samples=4, batch_size=32)
        expected = evaluation.evaluate_workdir(trained["singles"][2], num_samples=4,
                                               batch_size=32)
        for key in ("neg_elbo", "nll", "kl"):
            np.testing.assert_allclose(report[key], expected[key], rtol=1e-4)
        # Extracting again changes nothing; a bad index is named.
        assert sweep_lib.extract_member(workdir, 2) == member_dir
        with pytest.raises(vae_jax.ConfigError, match=r"an integer in \[0, 2\], got 3"):
            sweep_lib.extract_member(workdir, 3)
        with pytest.raises(vae_jax.CheckpointError, match="holds a single run"):
            sweep_lib.extract_member(trained["singles"][0], 0)
        # Readers of single runs point a sweep folder to --extract.
        for read in (runs.load_config, runs.load_run, evaluation.evaluate_workdir):
            with pytest.raises(vae_jax.CheckpointError,
                               match=r"holds a sweep \(scripts/sweep.py\), not one run: extract "
                                     r"its members with scripts/sweep.py --workdir=.* "
                                     "--extract=all"):
                read(workdir)


def test_extracting_before_the_first_checkpoint_points_to_sweep_py(tmp_path):
    with pytest.raises(vae_jax.CheckpointError,
                       match=r"no checkpoint in .*: train first with scripts/sweep.py"):
        sweep_lib.extract_member(str(tmp_path), 0)


@pytest.mark.slow
def test_a_resumed_sweep_equals_an_uninterrupted_one(trained):
    workdir = str(trained["root"] / "resumed")
    config = trained["config"].copy_and_resolve_references()
    with mocked_mnist():
        config.num_epochs = 1
        sweep_lib.train_sweep(config, trained["sweep"], workdir)
        config.num_epochs = 2
        record = sweep_lib.train_sweep(config, trained["sweep"], workdir)
        assert sweep_lib.train_sweep(config, trained["sweep"], workdir) == {"step": 8, "epoch": 2}
        # Another sweep in the same folder is refused, naming the difference.
        with pytest.raises(vae_jax.CheckpointError, match=re.escape(
                "holds a checkpoint of another sweep: beta=1,2,0.5; learning_rate=0.001,0.003,"
                "0.002; seed=0,1,2 (zip, 3 members) of images (28, 28, 1); this run asks for "
                "beta=1,2,4; ")):
            sweep_lib.train_sweep(config, sweep_lib.parse_sweep(["beta=1,2,4", *SPECS[1:]],
                                                                mode="zip"), workdir)
    straight = run_folder.read_metrics(trained["workdir"])
    resumed = run_folder.read_metrics(workdir)
    for line in straight + resumed + [record]:
        line.pop("epoch_time_s")
    assert resumed == straight and record == straight[-1]
    resumed_state = sweep_lib.restore_sweep(workdir).state
    straight_state = sweep_lib.restore_sweep(trained["workdir"]).state
    jax.tree.map(np.testing.assert_array_equal, training.to_checkpoint(resumed_state),
                 training.to_checkpoint(straight_state))  # bit-identical


@pytest.mark.slow
def test_a_diverging_member_stops_the_sweep_naming_it_before_any_checkpoint(trained):
    workdir = trained["root"] / "diverged"
    sweep = sweep_lib.parse_sweep("learning_rate=1e-3,1e30")
    config = small_config(data_dir=str(trained["root"] / "tfds"))
    with mocked_mnist(), pytest.raises(
            vae_jax.TrainingDivergedError,
            match=r"member 1 \(learning_rate=1e\+30\) at step 2: .*no checkpoint was written"):
        sweep_lib.train_sweep(config, sweep, str(workdir))
    assert runs.checkpoint_steps(str(workdir)) == [] and run_folder.read_metrics(workdir) == []


# --- Several devices --------------------------------------------------------------------------

MULTI_DEVICE_SCRIPT = textwrap.dedent("""
    import jax, numpy as np
    from mock_train import mocked_mnist, small_config
    from vae_jax.app import builders, data, runs, sweep as sw, training
    assert jax.device_count() == 2, jax.devices()
    P, named = jax.sharding.PartitionSpec, jax.sharding.NamedSharding

    def sweep_state(members):
        return training.stack([training.initial_state(c, (28, 28, 1), 4) for c in members])

    config = small_config()
    sweep = sw.parse_sweep(["beta=1,2,0.5,4", "seed=0,1,2,3"], mode="zip")
    members = sw.member_configs(config, sweep)
    images = np.asarray(jax.random.randint(jax.random.key(1), (64, 28, 28, 1), 0, 256), np.uint8)
    steps = training.make_train_steps(config, (28, 28, 1), 4, models=True)
    mesh = jax.sharding.Mesh(np.array(jax.devices()), ("models",))
    assert mesh.size == 2
    results = []
    for sharded in (False, True):
        states = sweep_state(members)
        hparams = sw.hyperparameters(sweep)
        keys = jax.vmap(builders.RunKeys.from_root)(states.key)
        indices = training.member_batch_indices(keys.shuffle, 1, 64, 16)
        if sharded:
            states, hparams = jax.device_put((states, hparams), named(mesh, P("models")))
            indices = jax.device_put(indices, named(mesh, P(None, "models")))
        states, metrics, _ = steps(states, hparams, images, indices)
        if sharded:
            kernel = states.params["decoder"]["output"]["kernel"]
            assert len(kernel.sharding.device_set) == 2, kernel.sharding
            assert kernel.addressable_shards[0].data.shape[0] == 2  # 2 of the 4 members each
        results.append(jax.device_get((states.params, metrics)))
    for a, b in zip(jax.tree.leaves(results[0]), jax.tree.leaves(results[1])):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)

    # The whole loop: train_sweep splits the 4 members over both devices, checkpoints, extracts.
    with mocked_mnist():
        images = data.load_image_dataset("mnist", data_dir=DATA_DIR).train_images
        record = sw.train_sweep(small_config(data_dir=DATA_DIR), sweep, WORKDIR)
        member = sw.extract_member(WORKDIR, 3)
    states = sweep_state(members)
    keys = jax.vmap(builders.RunKeys.from_root)(states.key)
    indices = training.member_batch_indices(keys.shuffle, 1, 64, 16)
    _, metrics, _ = steps(states, sw.hyperparameters(sweep), images, indices)
    np.testing.assert_allclose(record["train_neg_elbo"], metrics["neg_elbo"], rtol=1e-5)
    restored = sw.restore_sweep(WORKDIR).state.params["decoder"]["output"]["kernel"]
    assert restored.shape[0] == 4
    assert runs.checkpoint_steps(member) == [4]
    print("OK")
""")


@pytest.mark.slow
def test_the_model_axis_shards_over_two_devices_and_agrees(tmp_path):
    script = (f"DATA_DIR, WORKDIR = {str(tmp_path / 'tfds')!r}, {str(tmp_path / 'sweep')!r}\n"
              + MULTI_DEVICE_SCRIPT)
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2",
           "JAX_PLATFORMS": "cpu",
           "PYTHONPATH": os.pathsep.join([str(REPO / "tests"), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True,
                            text=True, env=env, cwd=REPO, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().endswith("OK")


def test_the_readme_lists_every_sweepable_field():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    listed = re.search(r"^- Sweepable: (.*?)\. ", readme, re.MULTILINE | re.DOTALL)
    assert listed, "README.md has no '- Sweepable: ...' line"
    names = re.findall(r"`(\w+)`", listed.group(1))
    assert names == list(sweep_lib.SWEEPABLE_FIELDS)
