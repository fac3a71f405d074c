"""2:4 weights as torch's semi-structured sparse tensors (myllm101/prune/semi_structured.py).

The pattern check and every reason a weight stays dense run here on the CPU; the conversion itself
needs CUDA (torch has no CPU kernel for it), so that test skips without a GPU, with the reason."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from myllm101.config import LlamaConfig
from myllm101.fast.llama import Llama
from myllm101.fast.prune import nm_mask
from myllm101.prune import prune_unstructured
from myllm101.prune.semi_structured import (
    holds_two_four,
    to_semi_structured,
    to_semi_structured_tensor,
    why_dense,
)


@given(seed=st.integers(0, 2**31 - 1), rows=st.integers(1, 8), groups=st.integers(1, 8))
def test_holds_two_four_exactly_when_every_group_keeps_at_most_two(seed, rows, groups):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(rows, 4 * groups, generator=g)
    pruned = w * nm_mask(w.abs())  # 2 of every 4 kept
    assert holds_two_four(pruned)
    assert not holds_two_four(w)  # randn has no exact zeros
    r = int(torch.randint(0, rows, (1,), generator=g))
    group = int(torch.randint(0, groups, (1,), generator=g))
    broken = pruned.clone()
    broken[r, 4 * group : 4 * group + 4] = 1.0  # one group keeps 4
    assert not holds_two_four(broken)
    fewer = pruned.clone()
    fewer[r, 4 * group : 4 * group + 4] = 0.0  # more zeros than 2 is still 2:4
    assert holds_two_four(fewer)


def test_holds_two_four_needs_a_matrix_of_whole_groups():
    assert not holds_two_four(torch.zeros(4, 6))
    assert not holds_two_four(torch.zeros(8))
    assert holds_two_four(torch.zeros(4, 8))


@pytest.mark.parametrize(
    "shape, dtype, device, two_four, reason",
    [
        ((64, 128), torch.float16, "cpu", True, "need CUDA; the weight is on cpu"),
        ((64, 128), torch.float32, "cuda", True, "dtype float32: expected float16 or bfloat16"),
        ((48, 128), torch.float16, "cuda", True, "shape (48, 128): both dims must be multiples of (32, 64)"),
        ((64, 96), torch.bfloat16, "cuda", True, "shape (64, 96): both dims"),
        ((64, 128), torch.float16, "cuda", False, "not 2:4"),
        ((64, 128, 1), torch.float16, "cuda", True, "expected a 2-D weight"),
    ],
)  # fmt: skip
def test_every_reason_a_weight_stays_dense(shape, dtype, device, two_four, reason):
    assert reason in why_dense(shape, dtype, device, two_four)


def test_a_qualifying_weight_has_no_reason():
    assert why_dense((64, 128), torch.float16, "cuda", True) == ""
    assert why_dense((32, 64), torch.bfloat16, "cuda", True) == ""


def _pruned_llama() -> Llama:
    # every block Linear's dims multiples of (32, 64): q/o 128x128, k/v 64x128, MLP 256x128 / 128x256
    cfg = LlamaConfig(vocab_size=96, block_size=32, n_layer=2, n_head=4, n_kv_head=2, n_embd=128,
                      intermediate_size=256)  # fmt: skip
    torch.manual_seed(0)
    model = Llama(cfg)
    prune_unstructured(model, "2:4")
    return model


def test_on_cpu_nothing_converts_and_the_error_says_why():
    model = _pruned_llama()
    with pytest.raises(ValueError, match=r"no weight converted \(layers\.0\.self_attn\.q_proj: "
                                         r"semi-structured sparse tensors need CUDA"):  # fmt: skip
        to_semi_structured(model)
    with pytest.raises(ValueError, match=r"names: 'lm_head\.nope' is not a Linear of this model"):
        to_semi_structured(model, ["lm_head.nope"])
    with pytest.raises(ValueError, match=r"w: semi-structured sparse tensors need CUDA"):
        to_semi_structured_tensor(model.layers[0].mlp.up_proj.weight)


def test_on_cuda_sparse_weights_give_the_dense_logits():
    if not torch.cuda.is_available():
        pytest.skip("GPU: semi-structured sparsity needs a CUDA device")
    model = _pruned_llama().to("cuda", torch.float16).eval()
    ids = torch.randint(0, 96, (2, 32), device="cuda")
    with torch.no_grad():
        dense = model(ids).logits.float()
        report = to_semi_structured(model)
        assert set(report.values()) == {"sparse"}, report
        sparse = model(ids).logits.float()
    # float16 GEMMs summing the same products in another order: ~1e-3 of the logits' scale
    scale = dense.abs().max().item()
    assert (sparse - dense).abs().max().item() <= 2e-3 * max(scale, 1.0)
