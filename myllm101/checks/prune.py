"""Input checks of pruning: importance scores and keep-masks (reference/prune.py,
fast/prune.py, myllm101/prune/).

Pure Python, as myllm101/checks/__init__.py: no NumPy, no torch.
"""

from __future__ import annotations

from typing import Any

from myllm101.checks import expect_divisible, expect_float, expect_ndim

# pruning: importance scores and keep-masks (reference/prune.py, fast/prune.py, myllm101/prune/)


def check_sparsity(sparsity: Any) -> None:
    """The fraction of weights to prune: a real number in [0, 1) (1 would remove everything)."""
    if (
        isinstance(sparsity, (bool, str))
        or not hasattr(sparsity, "__float__")
        or not 0.0 <= float(sparsity) < 1.0
    ):
        raise ValueError(f"sparsity: expected a float in [0, 1), got {sparsity!r}")


def prune_count(sparsity: float, n: int) -> int:
    """How many of ``n`` weights a ``sparsity`` prunes: round(sparsity * n), Python's round (half to
    even: 0.5 * 5 -> 2), the one rule both trees use. 0.5 * 6 -> 3, 0.3 * 10 -> 3."""
    check_sparsity(sparsity)
    return int(round(float(sparsity) * n))


def expect_no_nan(name: str, x: Any) -> None:
    """Masks sort scores: a NaN has no place in that order (and NumPy and torch place it apart)."""
    nan = x != x
    if bool(nan.any()):
        raise ValueError(f"{name}: expected no NaN values, got {int(nan.sum())} NaN(s)")


def check_scores(scores: Any, name: str = "scores") -> None:
    """Importance scores of one weight matrix: (out, in) float, no NaN."""
    expect_float(name, scores)
    expect_ndim(name, scores, 2)
    expect_no_nan(name, scores)


def check_score_dict(scores: Any) -> None:
    """Global pruning: a non-empty dict {name: (out, in) float scores}."""
    if not isinstance(scores, dict) or len(scores) == 0:
        got = "an empty dict" if isinstance(scores, dict) else type(scores).__name__
        raise ValueError(f"scores: expected a non-empty dict {{name: (out, in) scores}}, got {got}")
    for key, s in scores.items():
        check_scores(s, f"scores[{key!r}]")


def check_nm(n: Any, m: Any, in_features: int) -> None:
    """N:M sparsity keeps n of every m consecutive inputs: ints 1 <= n < m, m divides in_features."""
    for name, v in (("n", n), ("m", m)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name}: expected an int >= 1, got {v!r}")
    if not n < m:
        raise ValueError(f"n: expected n < m (keep n of every m weights), got n={n}, m={m}")
    if in_features % m != 0:
        raise ValueError(
            f"scores: in_features={in_features} must be divisible by m={m} (groups of {m} "
            f"consecutive inputs)"
        )


def check_norms_for(
    weight_name: str, weight: Any, norms_name: str, norms: Any, axis: int = 1
) -> None:
    """weight (out, in) float and norms (size of weight's axis ``axis``,) float."""
    expect_float(weight_name, weight)
    expect_ndim(weight_name, weight, 2)
    expect_float(norms_name, norms)
    if tuple(norms.shape) != (weight.shape[axis],):
        raise ValueError(
            f"{norms_name}: expected shape ({weight.shape[axis]},) (axis {axis} of {weight_name} "
            f"{tuple(weight.shape)}), got {tuple(norms.shape)}"
        )


def check_head_scores(o_weight: Any, o_in_norms: Any, n_head: Any, n_kv_head: Any) -> None:
    """o_weight (C, n_head * head_dim), o_in_norms (n_head * head_dim,), n_head a multiple of
    n_kv_head."""
    for name, v in (("n_head", n_head), ("n_kv_head", n_kv_head)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name}: expected an int >= 1, got {v!r}")
    expect_divisible("n_head", n_head, "n_kv_head", n_kv_head)
    check_norms_for("o_weight", o_weight, "o_in_norms", o_in_norms)
    if o_weight.shape[1] % n_head != 0:
        raise ValueError(
            f"o_weight: in_features={o_weight.shape[1]} (n_head * head_dim) must be divisible by "
            f"n_head={n_head}, got shape {tuple(o_weight.shape)}"
        )
