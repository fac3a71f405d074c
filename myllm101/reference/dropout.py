"""Inverted dropout (Srivastava et al., 2014), as used in GPT-2 training.

    mask ~ Bernoulli(1 - p) per element      (True = kept)
    y = x * mask / (1 - p)

Dividing the kept values by the keep probability makes E[y] = x, so nothing changes at evaluation
time: with training=False (or p=0) dropout is the identity. The backward routes dy through the
same mask and scale: dx = dy * mask / (1 - p).
"""

from typing import NamedTuple

import numpy as np

from myllm101.checks import expect_float, expect_in_range, expect_same_shape, expect_shape


class DropoutCache(NamedTuple):
    mask: np.ndarray | None  # bool, True = kept; None when dropout was the identity
    p: float


def dropout_mask(shape: tuple[int, ...], p: float, rng: np.random.Generator | int) -> np.ndarray:
    """A bool keep-mask of ``shape``: each element True with probability 1 - p."""
    expect_in_range("p", p, 0.0, 1.0)
    rng = np.random.default_rng(rng)  # an int seeds a new Generator; a Generator passes through
    # float32 uniforms (24 random bits) are plenty for a keep/drop coin and twice as fast to draw
    return np.asarray(rng.random(shape, dtype=np.float32) >= p)  # an array even for shape ()


def dropout_forward(
    x: np.ndarray,
    p: float,
    rng: np.random.Generator | int | None,
    training: bool = True,
    mask: np.ndarray | None = None,
):
    """x: (...) -> y: (...), DropoutCache(mask, p).

    ``mask`` (bool, x's shape) replays a given keep-mask instead of drawing one from ``rng``, so
    another implementation can be fed the very same mask. The identity cases draw nothing.
    """
    expect_float("x", x)
    expect_in_range("p", p, 0.0, 1.0)
    if not training or p == 0.0:
        return x.copy(), DropoutCache(None, p)
    if mask is None:
        if rng is None:
            raise ValueError("rng: expected a np.random.Generator or an int seed, got None")
        mask = dropout_mask(x.shape, p, rng)
    else:
        expect_same_shape("x", x, "mask", mask)
        if mask.dtype != np.bool_:
            raise ValueError(f"mask: expected dtype bool, got {mask.dtype}")
    y = x * mask / (1.0 - p)  # kept: exactly x / (1 - p); dropped: 0 (bool * float keeps x's dtype)
    return y, DropoutCache(mask, p)


def dropout_backward(dy: np.ndarray, cache: DropoutCache) -> np.ndarray:
    """dy: (...) -> dx: (...), through the forward's mask and scale."""
    mask, p = cache
    if mask is None:
        return dy.copy()
    expect_shape("dy", dy, mask.shape)
    return dy * mask / (1.0 - p)
