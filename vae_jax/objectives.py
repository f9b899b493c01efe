r"""The evidence lower bound (ELBO), written for one example and vmapped over a batch.

For a latent-variable model p(x, z) = p(x|z)·p(z) and any encoder q(z|x),

    log p(x) = E_q[log p(x, z) − log q(z|x)] + KL(q(z|x) ‖ p(z|x))
             ≥ E_q[log p(x|z)] − KL(q(z|x) ‖ p(z))                       =: ELBO(x)

because the dropped KL(q ‖ p(z|x)) is ≥ 0. The first term is the *reconstruction* log-likelihood
(−distortion), estimated here with one reparameterised sample z = μ + σ·ε; the second is the
*rate*, in closed form for a Gaussian q and p(z) = N(0, I). For a prior without a closed-form KL
(`model.prior`, e.g. a learned mixture: `vae_jax.priors`) the rate is the single-sample estimate
log q(z|x) − log p(z) at the same z (`vae_jax.priors.rate`): unbiased, so the ELBO estimate stays
unbiased. β-VAE weighs the rate: the objective is E_q[log p(x|z)] − β·KL, which equals the ELBO at
β = 1.

All values are in nats per example. Losses for training are −objective averaged over the batch.

Input checks (`vae_jax.ShapeError`, one line): x must have exactly the shape the function takes —
`model.input_shape` for `elbo`, (B, *model.input_shape) for `batch_elbo` and `loss` — and be
floating point; `key` must be one typed key of shape (). These read static shapes and dtypes, so
they run under `jax.jit` (at trace time) and cost nothing per step. Values (NaN, range) of a
traced x are not checked here: that needs the data on the host, which `check_input` does for a
concrete x and `vae_jax.app.evaluation.evaluate` and the scripts do once per data set.
"""

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from vae_jax import distributions, priors
from vae_jax._checks import real_number
from vae_jax.errors import ConfigError, ShapeError
from vae_jax.model import VAE, Params, _model_first, check_input, prior_params


class ELBOTerms(NamedTuple):
    """The terms of the (β-weighted) ELBO, in nats, per example (or averaged over a batch).

    Attributes:
      objective: reconstruction − β·kl; the ELBO itself when β = 1.
      reconstruction: the one-sample estimate of E_q[log p(x|z)] (≤ 0 for binary data).
      kl: KL(q(z|x) ‖ N(0, I)), the rate (≥ 0).
    """

    objective: jax.Array
    reconstruction: jax.Array
    kl: jax.Array

    @property
    def elbo(self) -> jax.Array:
        """The unweighted ELBO, reconstruction − kl, whatever β was."""
        return self.reconstruction - self.kl


def _check_x_input(model: VAE, x: jax.Array, x_input, function: str) -> None:
    """`ShapeError` unless `x_input` is None or float data of x's shape (static checks)."""
    if x_input is None:
        return
    if jnp.shape(x_input) != jnp.shape(x):
        raise ShapeError(f"{function}: x_input (the encoder's input) must have the shape of x, "
                         f"{tuple(jnp.shape(x))}, got {tuple(jnp.shape(x_input))}")
    check_input(model, x_input, function, batched=jnp.ndim(x) > len(model.input_shape),
                name="x_input")


def _check_weight(name: str, value: Any) -> float | None:
    """A scalar weight of `loss` (β, λ, code_l1): its value, or None when it is traced (a
    sweep's, known only when the step runs). Raises `ConfigError` for anything but one real
    number (ndim 0), and for a concrete one that is negative, infinite or NaN."""
    concrete = real_number("loss", name, value)
    if concrete is not None and not 0 <= concrete < math.inf:
        raise ConfigError(f"loss: {name} must be a finite number ≥ 0, got {value!r}")
    return concrete


def _penalises_codes(model: VAE, code_l1: Any) -> bool:
    """Whether `loss` adds the L1 penalty: not for a concrete 0 (a Python or NumPy number, a
    0-d array), always for a traced weight (a sweep's, or every argument of a jitted `loss`),
    whose value is known only when the step runs. Raises `ConfigError` as `_check_weight`, and
    for a concrete weight other than 0 with a stochastic model."""
    value = _check_weight("code_l1", code_l1)
    if value is not None and value != 0 and model.stochastic:
        raise ConfigError(f"loss: code_l1={value:g} is for the plain autoencoder "
                          "(stochastic=False); a VAE's code is regularised by its KL term")
    return value is None or value != 0


def _encode_decode(model: VAE, params: Params, x: jax.Array, keys: jax.Array,
                   x_input: jax.Array | None = None):
    """For a batch x (B, *input_shape) and one key per example (B,): (log p(x_b|z_b) (B,) with
    z_b = μ_b + σ_b·ε_b, the KL of each latent dimension (B, latent_dim), the codes z (B,
    latent_dim)). The encoder reads `x_input` when given (a corrupted x: denoising), the
    likelihood always scores x.

    The networks run on the whole batch at once, so each layer is one matrix product whose weight
    gradient is one product over the batch; the sampling, likelihood and KL are per example.
    """
    per_example = jax.vmap(model.log_likelihood, (None, 0, 0))
    mean, log_variance = model.encode(params, x if x_input is None else x_input)
    if not model.stochastic:  # plain autoencoder: z is the code itself, and there is no KL
        return per_example(params, x, model.decode(params, mean)), jnp.zeros_like(mean), mean
    z = jax.vmap(distributions.gaussian_sample)(keys, mean, log_variance)
    reconstruction = per_example(params, x, model.decode(params, z))
    if _kl_per_dimension(model):
        kl_per_dim = jax.vmap(jax.vmap(distributions.gaussian_kl_to_standard_normal))(
            mean, log_variance)
    else:  # one column: the rate of a prior that does not factorise over dimensions
        learned = prior_params(model, params)
        kl_per_dim = jax.vmap(lambda m, v, z_: priors.rate(model.prior, learned, m, v, z_))(
            mean, log_variance, z)[:, None]
    return reconstruction, kl_per_dim, z


def _kl_per_dimension(model: VAE) -> bool:
    """`vae_jax.priors.has_kl_per_dimension` of the model's prior; other priors give the rate of
    `vae_jax.priors.rate` as a whole."""
    return priors.has_kl_per_dimension(model.prior)


def _reconstruction_and_kl_per_dim(model: VAE, params: Params, x: jax.Array, keys: jax.Array,
                                   x_input: jax.Array | None = None
                                   ) -> tuple[jax.Array, jax.Array]:
    """`_encode_decode` without the codes: (log p(x_b|z_b) (B,), KL per dimension (B, d))."""
    return _encode_decode(model, params, x, keys, x_input)[:2]


def code_l1_norm(model: VAE, params: Params, x: jax.Array) -> jax.Array:
    """‖e(x_b)‖₁ = Σ_d |e_d(x_b)|, the L1 norm of each example's code, for a batch x (B,
    *input_shape): float (B,). The code is the encoder's output (the mean μ for a VAE), what the
    sparse-code penalty of `loss` (``code_l1``) weighs.

    Raises:
      ShapeError: x is not a float batch (B ≥ 1, *model.input_shape).
    """
    check_input(model, x, "code_l1_norm", batched=True)
    mean, _ = model.encode(params, x)
    return jnp.sum(jnp.abs(mean), axis=-1)


def elbo(model: VAE, params: Params, x: jax.Array, key: jax.Array, beta: float = 1.0,
         x_input: jax.Array | None = None) -> ELBOTerms:
    """Single-sample ELBO terms for *one* example x of shape `model.input_shape`.

        z = μ(x) + σ(x)·ε,  ε ~ N(0, I)            (from `key`)
        reconstruction = log p(x|z) = model.log_likelihood(params, x, decode(z))
        kl             = KL(N(μ, σ²) ‖ p(z))       (closed form for N(0, I), else
                                                     log q(z|x) − log p(z): `priors.rate`)
        objective      = reconstruction − β·kl

    Differentiable in `params` (reparameterisation); use `batch_elbo` for a batch. For the plain
    autoencoder (``model.stochastic`` False) z = μ(x), kl = 0 and `key` is unused.

    With `x_input` (a corrupted copy x̃ of x, `vae_jax.corruption.corrupt`) the encoder reads x̃
    and the likelihood still scores the clean x: μ = μ(x̃), σ = σ(x̃), reconstruction =
    log p(x|z). Its objective is the denoising bound of Im et al. 2017, a lower bound on log p(x)
    in expectation over x̃ (`vae_jax.corruption`).

    Args:
      model: the VAE (static under jit).
      params: its parameters.
      x: one example, float, shape `model.input_shape`.
      key: one typed PRNG key, shape ().
      beta: the KL weight β.
      x_input: None, or the encoder's input (a corrupted x), the shape of x.

    Returns:
      `ELBOTerms` of scalars, in nats.

    Raises:
      ShapeError: x (or `x_input`) is not one float example of shape `model.input_shape` (a batch
        points to `batch_elbo`), or `key` is not one typed key; static checks, under jit too.
    """
    check_input(model, x, "elbo", batched=False)
    _check_x_input(model, x, x_input, "elbo")
    distributions.check_key(key)
    reconstruction, kl_per_dim = _reconstruction_and_kl_per_dim(
        model, params, x[None], key[None], None if x_input is None else x_input[None])
    kl = jnp.sum(kl_per_dim)
    return ELBOTerms(reconstruction[0] - beta * kl, reconstruction[0], kl)


def batch_elbo(model: VAE, params: Params, x: jax.Array, key: jax.Array,
               beta: float = 1.0, x_input: jax.Array | None = None) -> ELBOTerms:
    """`elbo` vmapped over a batch x of shape (B, *input_shape): terms of shape (B,), in nats.

    `key` (one typed key, shape ()) is split into one independent key per example; `x_input`
    (None, or the encoder's input of x's shape) as in `elbo`.

    Raises:
      ShapeError: x (or `x_input`) is not a float batch (B ≥ 1, *model.input_shape), or `key` is
        not one typed key; static checks, under jit too.
    """
    check_input(model, x, "batch_elbo", batched=True)
    _check_x_input(model, x, x_input, "batch_elbo")
    distributions.check_key(key)
    keys = jax.random.split(key, x.shape[0])
    if x_input is None:
        return jax.vmap(elbo, in_axes=(None, None, 0, 0, None))(model, params, x, keys, beta)
    return jax.vmap(elbo, in_axes=(None, None, 0, 0, None, 0))(model, params, x, keys, beta,
                                                               x_input)


def loss(model: VAE, params: Params, x: jax.Array, key: jax.Array, beta: float = 1.0,
         free_bits: float = 0.0, x_input: jax.Array | None = None,
         code_l1: float = 0.0) -> tuple[jax.Array, ELBOTerms]:
    """Training loss and the batch-mean ELBO terms (for `jax.grad` with ``has_aux=True``).

        loss = −mean_b[reconstruction_b] + β · Σ_d max(λ, mean_b[KL_{b,d}])
               + code_l1 · mean_b[Σ_d |z_{b,d}|]

    with λ = `free_bits` nats per latent dimension (Kingma et al. 2016): dimensions whose
    batch-mean KL is below λ are not pushed further towards the prior. With λ = 0 and
    code_l1 = 0 this is −mean_b(reconstruction − β·kl). The returned terms are the true
    (unclipped) ones; ``objective`` is −loss (so it includes the L1 penalty).

    **Denoising** (`x_input`): the encoder reads x_input = x̃, a corrupted copy of x
    (`vae_jax.corruption.corrupt`), and reconstruction_b = log p(x_b|z_b) scores the clean x_b
    (Vincent et al. 2008, 2010; for the VAE the denoising bound of Im et al. 2017). With
    ``x_input = x`` the loss is the plain one, bit for bit.

    **Sparse codes** (`code_l1`, the plain autoencoder only): the L1 penalty code_l1·Σ_d |z_d| on
    each example's code z = e(x) (e(x̃) when denoising), in nats-equivalent units of the loss,
    averaged over the batch; `code_l1_norm` gives Σ_d |z_d| itself. For a VAE the KL term already
    regularises q(z|x), and an L1 weight on z is no part of its bound: refused.

    Differentiate in `params`, the second argument::

        grads, terms = jax.grad(vae_jax.loss, argnums=1, has_aux=True)(model, params, x, key)

    The old order ``loss(params, model, …)`` still works for one release and warns
    (`DeprecationWarning`).

    Args:
      model: the VAE (static under jit).
      params: the model's parameters (differentiated).
      x: a float batch, shape (B, *model.input_shape).
      key: one typed PRNG key, shape (); split into one key per example.
      beta: the KL weight β.
      free_bits: λ, in nats per latent dimension (only for a prior with a KL per dimension,
        N(0, I): `vae_jax.priors.has_kl_per_dimension`).
      x_input: None, or the encoder's input (a corrupted x), the shape of x.
      code_l1: the weight of the L1 penalty on the code (≥ 0; a float or a traced scalar).

    Returns:
      (loss, `ELBOTerms` of batch means), scalars in nats per example.

    Raises:
      ShapeError: x (or `x_input`) is not a float batch (B ≥ 1, *model.input_shape), or `key` is
        not one typed key; static checks at trace time, nothing is added to the compiled step.
      ConfigError: `beta`, `free_bits` or `code_l1` is not one real number (ndim 0), or a
        concrete one is negative, infinite or NaN; a concrete `code_l1` is not 0 for a
        stochastic model (a VAE: a traced one is applied as given); a concrete `free_bits` is
        not 0 for a prior without a KL per dimension (a traced one is not applied there: the
        single-sample rate estimate stays unclipped, so unbiased).
    """
    model, params = _model_first("loss", model, params)
    check_input(model, x, "loss", batched=True)
    _check_x_input(model, x, x_input, "loss")
    distributions.check_key(key)
    _check_weight("beta", beta)
    if _check_weight("free_bits", free_bits) not in (None, 0) and not _kl_per_dimension(model):
        raise ConfigError(f"loss: free_bits={free_bits!r} needs a KL per latent dimension, which "
                          f"the prior {model.prior.name} does not have: pass free_bits=0")
    penalised = _penalises_codes(model, code_l1)
    keys = jax.random.split(key, x.shape[0])
    reconstruction, kl_per_dim, codes = _encode_decode(model, params, x, keys, x_input)
    mean_reconstruction = jnp.mean(reconstruction)
    mean_kl_per_dim = jnp.mean(kl_per_dim, axis=0)
    kl = jnp.sum(mean_kl_per_dim)
    # A rate estimate (a prior without a closed-form KL) is unbiased only unclipped: its batch
    # mean can be < 0, and max(·, λ) would bias it and stop its gradient there.
    kl_term = (jnp.sum(jnp.maximum(mean_kl_per_dim, free_bits)) if _kl_per_dimension(model)
               else kl)
    objective = mean_reconstruction - beta * kl_term
    if penalised:
        objective = objective - code_l1 * jnp.mean(jnp.sum(jnp.abs(codes), axis=-1))
    return -objective, ELBOTerms(objective, mean_reconstruction, kl)


def kl_weight_schedule(beta: float = 1.0, warmup_steps: int = 0) -> optax.Schedule:
    """The KL weight as an optax schedule: β_t = β·min(1, t / warmup_steps).

    Linear KL warm-up (Bowman et al. 2016; Sønderby et al. 2016) starts training as an
    autoencoder and brings the KL term in over `warmup_steps` steps; with 0 the weight is β
    throughout.
    """
    if warmup_steps <= 0:
        return optax.constant_schedule(beta)
    return optax.linear_schedule(0.0, beta, warmup_steps)
