"""Private, XLA:CPU only: matrix products whose derivatives take the forms XLA:CPU runs fast.

For y = x·w with a batch of rows x (M, K), the weight gradient ∂w = xᵀ·∂y contracts both
operands over the batch axis M. XLA emits exactly that for a plain ``x @ w`` and XLA:CPU runs it in
Eigen, 3–4× slower than a product whose left operand is contracted over its last axis, which it
hands to YNNPACK. `matmul` is the same product with a JVP written so that its transpose, the
derivative ``jax.grad`` runs, multiplies a row-major copy of xᵀ (or of ∂yᵀ, `transpose_w`)
instead. Being a `jax.custom_jvp` rather than a `jax.custom_vjp`, it keeps every mode of
differentiation: ``jax.jvp``, ``jax.jacfwd``, ``jax.hessian`` and ``jax.vmap`` of any of them.

`vae_jax.networks` uses it for float32 dense layers and `vae_jax._cpu_conv` for the convolutions
it rewrites as products, on CPU backends only (`vae_jax._fast_paths`).
"""

import functools

import jax
import jax.numpy as jnp


def _contract_last(x: jax.Array, w: jax.Array) -> jax.Array:
    """x (..., K) · w (K, N) → (..., N), in float32."""
    return jax.lax.dot_general(x, w, (((x.ndim - 1,), (0,)), ((), ())),
                               preferred_element_type=jnp.float32)


def _transposed(x: jax.Array) -> jax.Array:
    """xᵀ for a matrix x, laid out row by row in memory.

    XLA would otherwise fold the transpose into the product that follows, which then contracts
    both operands over their first axis, the slow form (see the module docstring). The barrier
    keeps the transposed copy.
    """
    return jax.lax.optimization_barrier(x.T.reshape(-1)).reshape(x.shape[::-1])


def _transposed_in_transpose(u: jax.Array) -> jax.Array:
    """uᵀ for a matrix u, as the linear map whose transpose is `_transposed`: used on a tangent,
    it makes reverse mode materialise the transposed cotangent row by row."""
    return jax.lax.optimization_barrier(u.reshape(-1)).reshape(u.shape).T


@functools.partial(jax.custom_jvp, nondiff_argnums=(2,))
def matmul(x: jax.Array, w: jax.Array, transpose_w: bool = False) -> jax.Array:
    """x (..., K) · w for w (K, N), or x · wᵀ for w (N, K) with `transpose_w`: (..., N), summed in
    float32 and returned in x's dtype (x and w share one dtype).

    The JVP is ∂y = ∂x·w + x·∂w. Its transpose, the VJP, is ∂x = ∂y·wᵀ and ∂w = Σ_batch xᵀ·∂y
    (∂wᵀ = ∂yᵀ·x with `transpose_w`), each a product with a row-major left operand: a copy of xᵀ,
    or of ∂yᵀ with `transpose_w` (cheaper when N < K). With `transpose_w` the weight cotangent
    also passes a barrier, or XLA folds the transposes that follow it (back to a convolution
    kernel's layout) into the product and swaps it into the slow form.
    """
    contract_w = 1 if transpose_w else 0
    return jax.lax.dot_general(x, w, (((x.ndim - 1,), (contract_w,)), ((), ())),
                               preferred_element_type=jnp.float32).astype(x.dtype)


@functools.partial(matmul.defjvp, symbolic_zeros=True)
def _matmul_jvp(transpose_w, primals, tangents):
    x, w = primals
    dx, dw = tangents
    y = matmul(x, w, transpose_w)
    terms = []
    if not isinstance(dx, jax.custom_derivatives.SymbolicZero):
        contract_w = 1 if transpose_w else 0
        terms.append(jax.lax.dot_general(dx, w, (((dx.ndim - 1,), (contract_w,)), ((), ())),
                                         preferred_element_type=jnp.float32).astype(x.dtype))
    if not isinstance(dw, jax.custom_derivatives.SymbolicZero):
        rows = x.reshape(-1, x.shape[-1])
        if transpose_w:
            # x·∂wᵀ = ((∂w)·xᵀ)ᵀ, so that the transpose reads ∂yᵀ row by row.
            dwt = jax.lax.optimization_barrier(dw)
            product = jax.lax.dot_general(dwt, rows, (((1,), (1,)), ((), ())),
                                          preferred_element_type=jnp.float32)
            term = _transposed_in_transpose(product.astype(x.dtype))
        else:
            term = jax.lax.dot_general(_transposed(rows), dw, (((0,), (0,)), ((), ())),
                                       preferred_element_type=jnp.float32).astype(x.dtype)
        terms.append(term.reshape(y.shape))
    if not terms:
        return y, jnp.zeros_like(y)
    return y, functools.reduce(jnp.add, terms)
