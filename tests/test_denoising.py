"""Denoising (issue #19): the corruption of `vae_jax.corruption`, the objectives' encoder input
`x_input` with a clean target, the training step's corruption, the PSNR and the evaluation's
denoising rows."""

import os

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import vae_jax
from vae_jax import corruption, iwae, objectives
from vae_jax.app import configs, evaluation, run_folder, training
from test_in_memory import tiny_config, tiny_dataset

KINDS = ("gaussian", "mask", "salt_and_pepper")


def tiny_model(stochastic=True):
    vae = vae_jax.mlp_vae((6, 6, 1), latent_dim=3, hidden_dims=(16,), stochastic=stochastic)
    params = vae.init(jax.random.key(0))
    x = jax.random.uniform(jax.random.key(1), (5, 6, 6, 1))
    return vae, params, x


# --- The corruption -----------------------------------------------------------------------------

@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("jit", [False, True])
def test_corrupt_keeps_shape_dtype_and_the_unit_interval(kind, jit):
    x = jax.random.uniform(jax.random.key(0), (4, 6, 6, 1))
    fn = jax.jit(corruption.corrupt, static_argnums=2) if jit else corruption.corrupt
    noisy = fn(jax.random.key(1), x, kind, 0.3)
    chex.assert_shape(noisy, x.shape)
    chex.assert_type(noisy, jnp.float32)
    assert float(jnp.min(noisy)) >= 0.0 and float(jnp.max(noisy)) <= 1.0
    assert not np.array_equal(noisy, x)


@pytest.mark.parametrize("kind", KINDS + ("none",))
def test_level_zero_and_none_return_x_bit_for_bit(kind):
    x = jax.random.uniform(jax.random.key(0), (3, 5, 5, 1))
    np.testing.assert_array_equal(corruption.corrupt(jax.random.key(1), x, kind, 0.0), x)
    assert corruption.corrupt(None, x, "none", 0.7) is x  # nothing drawn, no key needed


def test_mask_zeroes_a_fraction_p_of_the_pixels():
    x = jnp.full((100, 28, 28, 1), 0.5)
    noisy = np.asarray(corruption.corrupt(jax.random.key(3), x, "mask", 0.25))
    zero = np.mean(noisy == 0.0)
    assert abs(zero - 0.25) < 5 * np.sqrt(0.25 * 0.75 / noisy.size)  # fixed key: deterministic
    assert set(np.unique(noisy)) == {0.0, 0.5}


def test_salt_and_pepper_sets_p_over_2_to_each_extreme():
    x = jnp.full((100, 28, 28, 1), 0.5)
    noisy = np.asarray(corruption.corrupt(jax.random.key(4), x, "salt_and_pepper", 0.4))
    tolerance = 5 * np.sqrt(0.2 * 0.8 / noisy.size)
    assert abs(np.mean(noisy == 0.0) - 0.2) < tolerance
    assert abs(np.mean(noisy == 1.0) - 0.2) < tolerance
    assert set(np.unique(noisy)) == {0.0, 0.5, 1.0}


def test_gaussian_noise_has_standard_deviation_sigma():
    x = jnp.full((100, 28, 28, 1), 0.5)
    noise = np.asarray(corruption.corrupt(jax.random.key(5), x, "gaussian", 0.1)) - 0.5
    assert abs(noise.mean()) < 5 * 0.1 / np.sqrt(noise.size)
    assert noise.std() == pytest.approx(0.1, rel=0.01)  # clipping at 5σ changes nothing here


def test_gaussian_noise_is_clipped_to_the_unit_interval():
    x = jnp.zeros((10, 8, 8, 1))
    noisy = np.asarray(corruption.corrupt(jax.random.key(6), x, "gaussian", 0.5))
    assert noisy.min() == 0.0 and np.mean(noisy == 0.0) == pytest.approx(0.5, abs=0.07)


def test_traced_level_under_vmap():
    x = jax.random.uniform(jax.random.key(0), (2, 4, 4, 1))
    levels = jnp.asarray([0.0, 0.5])
    noisy = jax.vmap(lambda p: corruption.corrupt(jax.random.key(1), x, "mask", p))(levels)
    chex.assert_shape(noisy, (2, 2, 4, 4, 1))
    np.testing.assert_array_equal(noisy[0], x)


BAD_LEVEL = "corrupt: level must be one real number"


@pytest.mark.parametrize("kind", ("blur", "", None, ["mask"], "Mask"))
def test_an_unknown_kind_is_one_line(kind):
    with pytest.raises(vae_jax.ConfigError, match="corruption kind must be one of") as error:
        corruption.corrupt(jax.random.key(0), jnp.zeros((2, 4)), kind, 0.1)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("kind", KINDS + ("none",))
@pytest.mark.parametrize("x,message", [
    (jnp.zeros((2, 4), jnp.int32), "got dtype int32; pass values in"),
    (np.zeros((2, 4), np.uint8), "got dtype uint8; pass values in"),
    (jnp.zeros((2, 4), bool), "got dtype bool"),
    ([[0, 1], [1, 0]], "got dtype int32"),
    ([[0.1], [0.2, 0.3]], "got a list that is not one"),
    ("pixels", "got a str that is not one"),
])
def test_x_that_is_not_floating_point_is_one_line_for_every_kind(kind, x, message):
    with pytest.raises(vae_jax.ShapeError, match="corrupt: x must be a floating-point array, "
                       + message) as error:
        corruption.corrupt(jax.random.key(0), x, kind, 0.1)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("kind", KINDS + ("none",))
@pytest.mark.parametrize("level,got", [
    (None, "got None"), ("0.3", "got '0.3'"), (1j, "got 1j"), (True, "got True"),
    ([0.1], r"got a float32 array of shape \(1,\)"),
    (np.full((2, 2), 0.1), r"got a float32 array of shape \(2, 2\)"),
    (jnp.zeros(3), r"got a float32 array of shape \(3,\)"),
])
def test_a_level_that_is_not_one_real_number_is_one_line(kind, level, got):
    with pytest.raises(vae_jax.ConfigError, match=f"{BAD_LEVEL} .*{got}") as error:
        corruption.corrupt(jax.random.key(0), jnp.zeros((2, 4)), kind, level)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("kind,level", [
    ("gaussian", -0.1), ("gaussian", float("nan")), ("gaussian", float("inf")),
    ("gaussian", np.float32(-1)), ("gaussian", jnp.asarray(-0.5)),
    ("mask", 1.5), ("mask", -0.01), ("mask", float("nan")), ("mask", jnp.asarray(2.0)),
    ("salt_and_pepper", 2), ("salt_and_pepper", -1e-3), ("salt_and_pepper", np.float64("nan")),
])
def test_a_concrete_level_out_of_range_is_one_line(kind, level):
    message = "finite σ ≥ 0 for gaussian" if kind == "gaussian" else fr"p in \[0, 1\] for {kind}"
    with pytest.raises(vae_jax.ConfigError, match=f"corrupt: level must be a .*{message}"):
        corruption.corrupt(jax.random.key(0), jnp.zeros((2, 4)), kind, level)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("level", [0, 1, 0.5, np.float64(0.25), np.asarray(0.5), jnp.float32(1.0)])
def test_concrete_levels_in_range_of_any_number_type_are_accepted(kind, level):
    x = jnp.full((2, 4), 0.5)
    noisy = corruption.corrupt(jax.random.key(0), x, kind, level)
    chex.assert_shape(noisy, x.shape)
    chex.assert_tree_all_finite(noisy)


@pytest.mark.parametrize("kind", KINDS)
def test_a_traced_level_is_shape_checked_and_not_range_checked(kind):
    x = jnp.full((2, 4), 0.5)
    jitted = jax.jit(corruption.corrupt, static_argnums=2)
    with pytest.raises(vae_jax.ConfigError, match=BAD_LEVEL):
        jitted(jax.random.key(0), x, kind, jnp.asarray([0.1, 0.2]))
    with pytest.raises(vae_jax.ConfigError, match=BAD_LEVEL):  # vmap over the wrong axis count
        jax.vmap(lambda p: corruption.corrupt(jax.random.key(0), x, kind, p))(jnp.ones((2, 2)))
    # A traced value is unknown at trace time: its range is the caller's (config validation).
    chex.assert_shape(jitted(jax.random.key(0), x, kind, -0.5), x.shape)


def test_a_missing_key_is_one_line_and_not_needed_for_none():
    x = jnp.zeros((2, 4))
    for key in (None, 0, jax.random.split(jax.random.key(0))):
        with pytest.raises(vae_jax.ShapeError, match="key must be"):
            corruption.corrupt(key, x, "mask", 0.1)
    assert corruption.corrupt(None, x, "none", 0.0) is x


def test_array_likes_of_floats_are_accepted():
    x = [[0.5, 0.25], [1.0, 0.0]]
    for kind in KINDS + ("none",):
        noisy = corruption.corrupt(jax.random.key(0), x, kind, 0.0)
        np.testing.assert_array_equal(noisy, np.asarray(x, np.float32))


# --- PSNR ---------------------------------------------------------------------------------------

def test_psnr_is_the_formula():
    rng = np.random.default_rng(0)
    target = rng.uniform(size=(3, 4, 4, 1)).astype(np.float32)
    estimate = np.clip(target + rng.normal(0, 0.1, target.shape), 0, 1).astype(np.float32)
    mse = np.mean((estimate - target).reshape(3, -1).astype(np.float64) ** 2, axis=1)
    expected = 10 * np.log10(1.0 / mse)
    for fn in (corruption.psnr, jax.jit(corruption.psnr)):
        got = fn(estimate, target)
        chex.assert_shape(got, (3,))
        np.testing.assert_allclose(got, expected, rtol=1e-5)
    np.testing.assert_allclose(corruption.psnr(estimate * 255, target * 255, 255.0), expected,
                               rtol=1e-4)
    assert float(corruption.psnr(target, target)[0]) == pytest.approx(100.0)  # floored MSE
    with pytest.raises(vae_jax.ShapeError, match="one shape"):
        corruption.psnr(estimate[:2], target)
    pixels = np.round(target * 255).astype(np.uint8)  # uint8 differences would wrap around
    for args, name in (((pixels, target), "estimate"), ((target, pixels), "target"),
                       ((pixels.astype(np.int32), pixels), "estimate")):
        with pytest.raises(vae_jax.ShapeError, match=f"psnr: {name} must be a floating-point "
                           "array, got dtype (uint8|int32); convert uint8"):
            corruption.psnr(*args)


@pytest.mark.parametrize("estimate,target,message", [
    (np.zeros((0, 4)), np.zeros((0, 4)), "at least one example"),
    ([], [], "at least one example"),
    (np.zeros((3, 0)), np.zeros((3, 0)), "at least one example of at least one pixel"),
    (np.zeros((2, 4, 0, 1)), np.zeros((2, 4, 0, 1)), "at least one pixel"),
    (np.zeros((2, 4)), np.zeros((2, 5)), "one shape"),
    (np.zeros((2, 4)), np.zeros((4, 2)), "one shape"),
    (np.float32(0.5), np.float32(0.5), "one shape"),
    ([[0.1], [0.2, 0.3]], np.zeros((2, 2)), "estimate must be a floating-point array, got a list"),
    (np.zeros((2, 2)), "target", "target must be a floating-point array, got a str"),
    (np.zeros((2, 2)), [[1, 2], [3, 4]], "target must be a floating-point array, got dtype int32"),
    (np.zeros((2, 2), bool), np.zeros((2, 2)), "estimate must be a floating-point array"),
])
def test_psnr_of_bad_arrays_is_one_line(estimate, target, message):
    with pytest.raises(vae_jax.ShapeError, match=f"psnr: .*{message}") as error:
        corruption.psnr(estimate, target)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("name", ["max_value", "min_mse"])
@pytest.mark.parametrize("value,message", [
    (0.0, "a finite number > 0, got 0.0"), (-1, "a finite number > 0, got -1"),
    (float("nan"), "a finite number > 0, got nan"), (float("inf"), "a finite number > 0"),
    (jnp.asarray(-2.0), "a finite number > 0"),
    (None, "one real number .*got None"), ("1", "one real number .*got '1'"),
    (np.ones(2), r"one real number .*shape \(2,\)"), (1 + 1j, "one real number"),
    (1e200, "beyond float32's range"), (1e-50, r"a finite number > 0, got 1e-50 \(float32's smallest"),
])
def test_psnr_of_bad_settings_is_one_line(name, value, message):
    x = np.full((2, 3), 0.5, np.float32)
    with pytest.raises(vae_jax.ConfigError, match=f"psnr: {name}( must be |=.* is ){message}") \
            as error:
        corruption.psnr(x, x, **{name: value})
    assert "\n" not in str(error.value)


def test_psnr_of_float16_images_and_extreme_peaks_is_finite():
    same = np.full((2, 3), 0.5, np.float16)
    np.testing.assert_allclose(corruption.psnr(same, same), [100.0, 100.0], rtol=1e-6)
    estimate, target = np.full((1, 4), 0.5, np.float32), np.full((1, 4), 0.6, np.float32)
    for peak in (1e-30, 1e30):  # max_value² would leave float32's range
        np.testing.assert_allclose(corruption.psnr(estimate, target, peak),
                                   20 * np.log10(peak) + 20.0, rtol=1e-5)


def test_psnr_takes_array_likes_and_traced_settings():
    estimate, target = [[0.5, 0.5], [0.0, 1.0]], [[0.6, 0.4], [0.0, 1.0]]
    np.testing.assert_allclose(corruption.psnr(estimate, target), [20.0, 100.0], rtol=1e-5)
    np.testing.assert_allclose(jax.jit(corruption.psnr)(estimate, target, 2.0, 1e-4),
                               [10 * np.log10(4 / 0.01), 10 * np.log10(4 / 1e-4)], rtol=1e-5)
    with pytest.raises(vae_jax.ConfigError, match="max_value must be one real number"):
        jax.jit(corruption.psnr)(estimate, target, jnp.ones(2))


# --- The objectives: the encoder reads x̃, the likelihood scores the clean x ---------------------

@pytest.mark.parametrize("jit", [False, True])
def test_loss_with_x_input_equal_to_x_is_the_plain_loss_exactly(jit):
    vae, params, x = tiny_model()
    key = jax.random.key(2)
    loss = jax.jit(objectives.loss, static_argnums=0) if jit else objectives.loss
    plain = loss(vae, params, x, key)
    zero_noise = corruption.corrupt(jax.random.key(9), x, "gaussian", 0.0)
    same = loss(vae, params, x, key, 1.0, 0.0, zero_noise)
    np.testing.assert_array_equal(plain[0], same[0])
    chex.assert_trees_all_equal(plain[1], same[1])
    iwae_loss = jax.jit(iwae.iwae_loss, static_argnums=(0, 4)) if jit else iwae.iwae_loss
    np.testing.assert_array_equal(iwae_loss(vae, params, x, key, 3)[0],
                                  iwae_loss(vae, params, x, key, 3, zero_noise)[0])


def test_the_reconstruction_target_is_the_clean_x():
    vae, params, x = tiny_model()
    noisy = corruption.corrupt(jax.random.key(3), x, "mask", 0.5)
    key = jax.random.key(4)
    terms = objectives.elbo(vae, params, x[0], key, x_input=noisy[0])
    mean, log_variance = vae.encode(params, noisy[:1])
    z = vae_jax.gaussian_sample(key, mean[0], log_variance[0])
    expected = vae.log_likelihood(params, x[0], vae.decode(params, z))
    assert float(terms.reconstruction) == pytest.approx(float(expected), rel=1e-6)
    assert float(terms.kl) == pytest.approx(float(jnp.sum(
        vae_jax.gaussian_kl_to_standard_normal(mean[0], log_variance[0]))), rel=1e-6)
    batch = objectives.batch_elbo(vae, params, x, key, x_input=noisy)
    chex.assert_shape([batch.objective, batch.reconstruction, batch.kl], (5,))
    # The plain autoencoder: z = e(x̃), scored against x, deterministic.
    ae, ae_params, _ = tiny_model(stochastic=False)
    loss, means = objectives.loss(ae, ae_params, x, key, x_input=noisy)
    decoded = ae.decode(ae_params, ae.encode(ae_params, noisy)[0])
    expected = jnp.mean(jax.vmap(ae.log_likelihood, (None, 0, 0))(ae_params, x, decoded))
    assert float(means.reconstruction) == pytest.approx(float(expected), rel=1e-6)
    assert float(loss) == pytest.approx(-float(expected), rel=1e-6)
    # IWAE: the noisy encoder changes the bound, the shapes stay.
    iwae_value, iwae_means = iwae.iwae_loss(vae, params, x, key, 3, noisy)
    chex.assert_shape([iwae_value, iwae_means.objective], ())
    assert float(iwae_value) != float(iwae.iwae_loss(vae, params, x, key, 3)[0])


def test_x_input_of_another_shape_is_one_line():
    vae, params, x = tiny_model()
    with pytest.raises(vae_jax.ShapeError, match="x_input .* must have the shape of x"):
        objectives.loss(vae, params, x, jax.random.key(0), x_input=x[:2])
    pixels = np.round(np.asarray(x) * 255).astype(np.uint8)
    for function, args in ((objectives.loss, ()), (objectives.batch_elbo, ()),
                           (iwae.iwae_loss, (2,))):
        with pytest.raises(vae_jax.ShapeError, match=f"{function.__name__}: x_input must be a "
                           "floating-point array, got dtype uint8"):
            function(vae, params, x, jax.random.key(0), *args, x_input=pixels)


# --- Config -------------------------------------------------------------------------------------

@pytest.mark.parametrize("overrides,message", [
    ({"corruption": "blur"}, "config.corruption must be one of"),
    ({"corruption": "mask", "corruption_level": 1.5}, "config.corruption_level must be a number "
                                                        r"in \[0, 1\]"),
    ({"corruption": "gaussian", "corruption_level": -0.1}, "config.corruption_level must be"),
    ({"corruption_level": 0.3}, "config.corruption_level must be 0 with corruption='none'"),
])
def test_bad_corruption_fields_are_named(overrides, message):
    config = configs.get_default()
    config.update(overrides)
    with pytest.raises(vae_jax.ConfigError, match=message):
        configs.validate(config)


# --- Training and evaluation --------------------------------------------------------------------

def _params(workdir):
    from vae_jax.app import runs  # pylint: disable=import-outside-toplevel
    return runs.load_run(workdir, dataset=tiny_dataset()).params


@pytest.mark.slow
def test_corruption_level_zero_trains_the_plain_model_exactly(tmp_path):
    dataset = tiny_dataset()
    plain = training.train_and_evaluate(tiny_config(num_epochs=1), str(tmp_path / "a"), dataset)
    zero = training.train_and_evaluate(tiny_config(num_epochs=1, corruption="gaussian"),
                                       str(tmp_path / "b"), dataset)
    assert {k: v for k, v in zero.items() if k != "epoch_time_s"} == {
        k: v for k, v in plain.items() if k != "epoch_time_s"}
    chex.assert_trees_all_equal(_params(str(tmp_path / "a")), _params(str(tmp_path / "b")))


@pytest.mark.slow
@pytest.mark.parametrize("overrides", [
    {"corruption": "gaussian", "corruption_level": 0.3},
    {"model": "ae", "corruption": "salt_and_pepper", "corruption_level": 0.2},
])
def test_a_resumed_denoising_run_equals_an_uninterrupted_one(overrides, tmp_path):
    dataset = tiny_dataset()
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    training.train_and_evaluate(tiny_config(num_epochs=1, **overrides), a, dataset)
    resumed = training.train_and_evaluate(tiny_config(num_epochs=2, **overrides), a, dataset)
    straight = training.train_and_evaluate(tiny_config(num_epochs=2, **overrides), b, dataset)
    assert resumed == {**straight, "epoch_time_s": resumed["epoch_time_s"]}
    chex.assert_trees_all_equal(_params(a), _params(b))
    pictures = sorted(os.listdir(os.path.join(b, run_folder.IMAGES_DIR)))
    assert "denoising_epoch002.png" in pictures


def test_denoising_picture_has_noisy_denoised_and_clean_rows():
    clean = np.zeros((16, 4, 4, 1))
    grids = run_folder.picture_grids(clean, clean, clean, 8, noisy=clean + 1, denoised=clean)
    assert set(grids) == {"reconstructions", "samples", "denoising"}
    assert grids["denoising"].shape == (2 * (6 * (4 + 2) + 2), 2 * (8 * (4 + 2) + 2), 1)
    assert "denoising" not in run_folder.picture_grids(clean, clean, clean, 8)


def test_denoising_terms_score_the_clean_target_and_psnr_by_formula():
    vae, params, x = tiny_model()
    grey = jnp.round(x * 4) / 4
    key = jax.random.key(7)
    for fn in (evaluation.denoising_terms, jax.jit(evaluation.denoising_terms,
                                                   static_argnums=(0, 5))):
        terms = fn(vae, params, x, grey, key, "gaussian", 0.2)
        chex.assert_shape([terms["reconstruction_log_likelihood"], terms["psnr_db"]], (5,))
    noisy = corruption.corrupt(key, x, "gaussian", 0.2)
    decoded = vae.decode(params, vae.encode(params, noisy)[0])
    mse = np.mean((np.asarray(jax.nn.sigmoid(decoded)) - np.asarray(grey)).reshape(5, -1) ** 2,
                  axis=1)
    np.testing.assert_allclose(terms["psnr_db"], 10 * np.log10(1 / mse), rtol=1e-4)
    np.testing.assert_allclose(terms["reconstruction_log_likelihood"],
                               jax.vmap(vae.log_likelihood, (None, 0, 0))(params, x, decoded),
                               rtol=1e-5)
    report = evaluation.denoising_report(vae, params, x, grey, key, "mask", (0, 0.5))
    assert report["noise_kind"] == "mask" and [r["level"] for r in report["denoising"]] == [0, 0.5]
    with pytest.raises(vae_jax.ConfigError, match="noise_levels must be in"):
        evaluation.denoising_report(vae, params, x, grey, key, "mask", (2,))
    with pytest.raises(vae_jax.ConfigError, match="noise_kind must be one of"):
        evaluation.denoising_report(vae, params, x, grey, key, "none", (0.1,))


@pytest.mark.slow
def test_a_sweep_over_corruption_levels_trains_what_the_single_runs_do(tmp_path):
    from vae_jax.app import sweep  # pylint: disable=import-outside-toplevel
    dataset = tiny_dataset()
    base = tiny_config(num_epochs=1, corruption="mask")
    last = sweep.train_sweep(base, sweep.parse_sweep("corruption_level=0.1,0.4"),
                             str(tmp_path / "sweep"), dataset)
    single = training.train_and_evaluate(tiny_config(num_epochs=1, corruption="mask",
                                                     corruption_level=0.4),
                                         str(tmp_path / "single"), dataset)
    for key in ("train_loss", "test_neg_elbo"):
        assert last[key][1] == pytest.approx(single[key], rel=1e-5)
    assert last["train_loss"][0] != last["train_loss"][1]
