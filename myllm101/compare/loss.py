import numpy as np
import torch

from myllm101.compare import Case, grads_of, leaf
from myllm101.fast import loss as fast
from myllm101.reference import loss as ref

# the language-model head's logits (B, T, V) against next-token targets (B, T)
SHAPES = {"small": (2, 16, 97), "realistic": (8, 512, 32000)}
IGNORE_INDEX = -100


def make_cases(size: str, dtype: str, seed: int) -> list[Case]:
    B, T, V = SHAPES[size]
    rng = np.random.default_rng(seed)
    logits = rng.standard_normal((B, T, V), dtype=np.float64 if dtype == "float64" else np.float32)
    targets = rng.integers(0, V, (B, T))
    # a tenth of the positions are padding, as in a batch of uneven documents
    padded = np.where(rng.random((B, T)) < 0.1, IGNORE_INDEX, targets)
    lt = leaf(logits)
    one = torch.ones((), dtype=lt.dtype)

    def case(variant, tgt, **kw):
        tt = leaf(tgt)

        def ref_backward():
            _, cache = ref.cross_entropy_forward(logits, tgt, **kw)
            return (ref.cross_entropy_backward(1.0, cache),)

        return Case(
            "loss",
            variant,
            f"B={B} T={T} V={V}",
            ref_forward=lambda: ref.cross_entropy_forward(logits, tgt, **kw)[0],
            fast_forward=lambda: fast.cross_entropy(lt.detach(), tt, **kw),
            ref_backward=ref_backward,
            fast_backward=lambda: grads_of(fast.cross_entropy(lt, tt, **kw), (lt,), one),
        )

    return [
        case("cross_entropy", targets),
        case("smoothed_padded", padded, ignore_index=IGNORE_INDEX, label_smoothing=0.1),
    ]
