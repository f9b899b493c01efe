"""`vae_jax._cpu_products.matmul` is the plain product in value and in every mode of
differentiation, and its compiled gradient never contracts a left operand over its first axis
(the form XLA:CPU runs slowly)."""

import re

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vae_jax import _cpu_products


def _operands(transpose_w, dtype=jnp.float32):
    kx, kw = jax.random.split(jax.random.key(0))
    x = jax.random.normal(kx, (3, 5, 12), dtype)
    w = jax.random.normal(kw, (7, 12) if transpose_w else (12, 7), dtype)
    return x, w


def _plain(transpose_w):
    return lambda x, w: jnp.einsum("...k,nk->...n" if transpose_w else "...k,kn->...n", x, w)


@pytest.mark.parametrize("transpose_w", [False, True])
class TestMatmul:
    def test_value_and_gradients_are_the_plain_products(self, transpose_w):
        x, w = _operands(transpose_w)
        cotangent = jax.random.normal(jax.random.key(1), (3, 5, 7))
        for jit in (False, True):
            product = lambda x, w: _cpu_products.matmul(x, w, transpose_w)  # noqa: E731
            product = jax.jit(product) if jit else product
            y, vjp = jax.vjp(product, x, w)
            y_plain, vjp_plain = jax.vjp(_plain(transpose_w), x, w)
            chex.assert_shape(y, (3, 5, 7))
            chex.assert_type(y, jnp.float32)
            np.testing.assert_allclose(y, y_plain, rtol=1e-5, atol=1e-5)
            for grad, grad_plain in zip(vjp(cotangent), vjp_plain(cotangent)):
                chex.assert_equal_shape([grad, grad_plain])
                np.testing.assert_allclose(grad, grad_plain, rtol=1e-5, atol=1e-5)

    def test_forward_mode_second_order_and_vmap(self, transpose_w):
        x, w = _operands(transpose_w)
        product = lambda x, w: _cpu_products.matmul(x, w, transpose_w)  # noqa: E731
        for argnum in (0, 1):
            forward = jax.jacfwd(product, argnums=argnum)(x, w)
            reverse = jax.jacrev(product, argnums=argnum)(x, w)
            np.testing.assert_allclose(forward, reverse, rtol=1e-5, atol=1e-6)
        scalar = lambda w: jnp.sum(jnp.tanh(product(x, w)))  # noqa: E731
        hessian = jax.hessian(scalar)(w).reshape(w.size, w.size)
        plain = jax.hessian(lambda w: jnp.sum(jnp.tanh(_plain(transpose_w)(x, w))))(w)
        np.testing.assert_allclose(hessian, plain.reshape(w.size, w.size), rtol=1e-4, atol=1e-5)
        batched = jax.vmap(jax.grad(scalar))(jnp.stack([w, 2 * w]))
        np.testing.assert_allclose(batched[1], jax.grad(scalar)(2 * w), rtol=1e-5, atol=1e-6)

    def test_bfloat16_operands_give_bfloat16_results_and_gradients(self, transpose_w):
        x, w = _operands(transpose_w, jnp.bfloat16)
        y, vjp = jax.vjp(lambda x, w: _cpu_products.matmul(x, w, transpose_w), x, w)
        chex.assert_type([y, *vjp(jnp.ones_like(y))], jnp.bfloat16)
        np.testing.assert_allclose(y.astype(jnp.float32),
                                   _plain(transpose_w)(x.astype(jnp.float32),
                                                       w.astype(jnp.float32)),
                                   rtol=2e-2, atol=5e-2)

    def test_the_compiled_gradient_contracts_left_operands_over_their_last_axis(self,
                                                                                transpose_w):
        """A weight gradient xᵀ·∂y as XLA writes it for a plain product contracts x over its
        first axis; the point of the module is that none of its products do."""
        x, w = _operands(transpose_w)
        x = x.reshape(-1, x.shape[-1])

        def contractions(product):
            loss = lambda w: jnp.sum(jnp.tanh(product(x, w)) ** 2)  # noqa: E731
            hlo = jax.jit(jax.grad(loss)).lower(w).compile().as_text()
            return re.findall(r"lhs_contracting_dims=\{(\d+)\}", hlo)

        assert "0" in contractions(_plain(transpose_w))
        ours = contractions(lambda x, w: _cpu_products.matmul(x, w, transpose_w))
        assert ours and "0" not in ours
