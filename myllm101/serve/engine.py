"""What the server serves: a causal LM, its tokenizer and chat format, behind one small interface.

    engine = load_engine("smollm2", dtype="auto")            # SmolLM2-135M-Instruct (GGUF)
    engine = load_engine("runs/my-llama")                    # one of our run / model directories
    ids = engine.encode(engine.chat_text([{"role": "user", "content": "Hi"}]))
    engine.decode(ids)                                      # text, special tokens left out

The chat format is ChatML (hub/smollm2.py ``chat_prompt``) for every model: SmolLM2 was trained
on it; a run directory's tokenizer that has ``<|im_start|>`` / ``<|im_end|>`` as special tokens
(finetune/sft.py) reads it the same way, any other tokenizer gets it as plain text. Generation
stops at the tokenizer's end tokens (``<|im_end|>``, ``<|endoftext|>``, a GGUF's eos id).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

END_TOKENS = ("<|im_end|>", "<|endoftext|>")


@dataclass
class Engine:
    """A loaded causal LM ready to serve. ``context``: the most tokens (prompt + new) a request
    may hold: the model's block_size, or less (``max_context``: it sizes the KV cache)."""

    model: nn.Module
    tokenizer: object
    model_id: str
    context: int
    dtype: str
    stop_ids: frozenset[int] = field(default_factory=frozenset)
    specials: frozenset[int] = field(default_factory=frozenset)

    def encode(self, text: str) -> list[int]:
        """Ids of ``text``; special tokens written in it (``<|im_start|>``) become their ids."""
        tok = self.tokenizer
        if hasattr(tok, "bpe"):  # a GGUF tokenizer allows special tokens already
            return tok.encode(text)
        try:
            return tok.encode(text, allowed_special="all")
        except TypeError:  # a tokenizer without special tokens
            return tok.encode(text)

    def decode(self, ids: list[int]) -> str:
        """Text of ``ids`` without special tokens (partial UTF-8 at the end reads as U+FFFD)."""
        tok = self.tokenizer
        tok = getattr(tok, "bpe", tok)
        n_vocab = getattr(tok, "n_vocab", None)
        # a model's vocab may be larger than its tokenizer's (padded): those ids have no text
        kept = [i for i in ids if i not in self.specials and (n_vocab is None or i < n_vocab)]
        try:
            return tok.decode(kept)
        except ValueError:  # an unused id inside the range: leave it out, keep the rest
            return "".join(_decode_or_empty(tok, [i]) for i in kept)

    def chat_text(self, messages: list[dict[str, str]]) -> str:
        """ChatML text of ``messages``, ending where the assistant's answer starts."""
        from myllm101.hub.smollm2 import chat_prompt

        return chat_prompt(messages)


def _decode_or_empty(tok, ids: list[int]) -> str:
    try:
        return tok.decode(ids)
    except ValueError:
        return ""


def _special_ids(tokenizer) -> dict[str, int]:
    bpe = getattr(tokenizer, "bpe", tokenizer)
    return dict(getattr(bpe, "special_tokens", None) or {})


def load_engine(spec: str, dtype: str = "auto", max_context: int | None = None) -> Engine:
    """``spec``: "smollm2" or a run / model directory of ours holding a causal LM and its
    tokenizer. ``dtype``: "auto" (bf16 weights where this machine runs bf16 natively, else
    fp32; device.py), "fp32" or "bf16". ``max_context``: cap on tokens per request."""
    from myllm101.device import choose_inference_dtype

    choice = choose_inference_dtype(dtype).value
    if spec == "smollm2":
        from myllm101.hub.smollm2 import load_smollm2

        model, tok = load_smollm2(choice)
        model_id = "smollm2"
    else:
        from myllm101.train.checkpoint import load_model

        model, tok, cfg = load_model(spec)
        if tok is None:
            raise ValueError(f"--model {spec}: holds no tokenizer (myllm101_tokenizer.json)")
        if cfg.model_type == "bert":
            raise ValueError(f"--model {spec}: expected a causal LM (gpt or llama), got bert")
        model = model.to(torch.bfloat16 if choice == "bf16" else torch.float32).eval()
        model_id = Path(spec).resolve().name
    block = model.cfg.block_size
    if max_context is not None and max_context < 2:
        raise ValueError(f"max_context: expected an int >= 2, got {max_context}")
    context = block if max_context is None else min(block, max_context)
    specials = _special_ids(tok)
    stops = {specials[name] for name in END_TOKENS if name in specials}
    eos = getattr(tok, "eos_id", None)
    if eos is not None:
        stops.add(eos)
    return Engine(
        model.eval(), tok, model_id, context, choice, frozenset(stops), frozenset(specials.values())
    )
