"""The models behind the app: load one, turn a conversation into ids, stream its reply as text.

    cm = load_chat_model("smollm2")               # or a model / run / quantized directory of ours
    ids = cm.encode(cm.prompt_text([], "What is a transformer?"))
    for text in stream_reply(cm, ids, Sampling(temperature=0.0, max_new_tokens=32)):
        print(text)                               # the reply so far, one token longer each time

A model whose tokenizer has ChatML's special tokens (``<|im_start|>``, ``<|im_end|>``: SmolLM2 and
anything quantized, pruned or fine-tuned from it) gets hub/smollm2.py's ``chat_prompt`` around the
conversation and stops at ``<|im_end|>``. Any other model (a Shakespeare GPT) has no chat format:
its "reply" is the continuation of the last message. Generation is fast/generate.py's ``stream``.
"""

from __future__ import annotations

import codecs
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
from torch import nn

CHATML = ("<|im_start|>", "<|im_end|>")
CAUSAL_TYPES = ("gpt", "llama")


@dataclass
class ChatModel:
    """A causal LM of ours with its tokenizer, as the app uses it."""

    model: nn.Module
    tokenizer: object  # our BPE Tokenizer, or hub/gguf_loader.py's GGUFTokenizer (SmolLM2)
    name: str
    quantization: dict | None = None  # the "quantization" entry of a quantized directory
    specials: dict[str, int] = field(init=False)

    def __post_init__(self) -> None:
        self.specials = dict(bpe_of(self.tokenizer).special_tokens)

    @property
    def block_size(self) -> int:
        return int(self.model.cfg.block_size)

    @property
    def vocab_size(self) -> int:
        return int(self.model.cfg.vocab_size)

    @property
    def chat(self) -> bool:
        """Does the tokenizer know ChatML (so the model was trained to chat)?"""
        return all(s in self.specials for s in CHATML)

    @property
    def stop_tokens(self) -> tuple[int, ...]:
        """<|im_end|> for a chat model; else <|endoftext|> when the vocabulary has it."""
        names = ("<|im_end|>",) if self.chat else ("<|endoftext|>",)
        stop = {self.specials[n] for n in names if n in self.specials}
        eos = getattr(self.tokenizer, "eos_id", None)
        if eos is not None and self.chat:
            stop.add(eos)
        return tuple(sorted(stop))

    def encode(self, text: str) -> list[int]:
        """Ids of ``text``, special tokens written in it included; ids the model's embedding lacks
        (bytes past its vocabulary, as GGUFTokenizer drops them) are left out."""
        return [i for i in bpe_of(self.tokenizer).encode(text, allowed_special="all")
                if i < self.vocab_size]  # fmt: skip

    def decode(self, ids: list[int]) -> str:
        """Text of ``ids`` without special tokens, nor ids the tokenizer lacks (a model may have
        more embedding rows than its tokenizer has tokens, and sample any of them)."""
        bpe, specials = bpe_of(self.tokenizer), set(self.specials.values())
        return bpe.decode([i for i in ids if i not in specials and i < bpe.n_vocab])

    def prompt_text(self, history: list[dict], message: str) -> str:
        """The text the model continues: ChatML of history + message, or the message alone."""
        if not self.chat:
            return message
        from myllm101.hub.smollm2 import chat_prompt

        turns = [{"role": m["role"], "content": content_text(m["content"])} for m in history]
        return chat_prompt([*turns, {"role": "user", "content": message}])

    def describe(self) -> str:
        cfg = self.model.cfg
        kind = "chat (ChatML)" if self.chat else "text continuation (no chat template)"
        q = f", {self.quantization.get('scheme', 'quantized')}" if self.quantization else ""
        return (f"{self.name}: {cfg.model_type}, {cfg.n_layer} layers, {cfg.n_head} heads, "
                f"block {cfg.block_size}, vocab {cfg.vocab_size}{q}; {kind}")  # fmt: skip


def content_text(content) -> str:
    """A Chatbot message's content as text (Gradio may hand back a list of parts)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(content_text(c) for c in content)
    if isinstance(content, dict):
        return str(content.get("text", ""))
    return str(content)


def bpe_of(tokenizer):
    """Our BPE Tokenizer itself, or the one inside a GGUFTokenizer."""
    return getattr(tokenizer, "bpe", tokenizer)


def load_chat_model(spec: str) -> ChatModel:
    """ "smollm2" (hub/smollm2.py ``load_smollm2``, fp32) or a model, run or quantized directory
    (quant/eval.py ``load_any``) -> ChatModel. Only causal LMs with a BPE tokenizer can chat."""
    if spec == "smollm2":
        from myllm101.hub.smollm2 import load_smollm2

        model, tok = load_smollm2("fp32")
        return ChatModel(model, tok, "smollm2")
    from myllm101.quant.eval import load_any

    loaded = load_any(spec)
    model_type = loaded.cfg.model_type
    if model_type not in CAUSAL_TYPES:
        raise ValueError(f"--model {spec}: expected a causal LM ({'/'.join(CAUSAL_TYPES)}), "
                         f"got model_type {model_type!r}")  # fmt: skip
    if loaded.tokenizer is None or not hasattr(bpe_of(loaded.tokenizer), "encode_ordinary"):
        raise ValueError(f"--model {spec}: expected a BPE tokenizer with the model, found none")
    return ChatModel(loaded.model.eval(), loaded.tokenizer, str(spec), loaded.quantization)


@dataclass
class Sampling:
    """The chat tab's controls. temperature 0 = greedy (top_p and seed then change nothing).
    Sliders hand over floats: ``from_controls`` rounds the integer ones."""

    temperature: float = 0.7
    top_p: float = 0.9
    max_new_tokens: int = 128
    seed: int = 0

    @classmethod
    def from_controls(cls, temperature, top_p, max_new_tokens, seed) -> Sampling:
        return cls(float(temperature), float(top_p), int(round(max_new_tokens)),
                   int(round(seed or 0)))  # fmt: skip

    def check(self) -> None:
        from myllm101.checks import check_max_new_tokens, check_temperature, check_top_p

        check_temperature(self.temperature)
        check_top_p(self.top_p)
        check_max_new_tokens(self.max_new_tokens)


def fit_to_block(ids: list[int], max_new_tokens: int, block_size: int) -> tuple[list[int], int]:
    """(prompt, new tokens) that fit the context: at most block_size - 1 new tokens, and the
    prompt cut from the left to the room left. 10 ids, 8 new, block 12 -> last 4 ids, 8 new."""
    new = min(int(max_new_tokens), block_size - 1)
    room = block_size - new
    return ids[-room:], new


def reply_steps(cm: ChatModel, ids: list[int], sampling: Sampling) -> Iterator[tuple[int, str]]:
    """(new tokens so far, the reply's text so far) after each new token. A token that ends inside
    a UTF-8 character shows nothing of it until the token completing it arrives; the model's stop
    tokens end the reply and are not shown."""
    from myllm101.fast.generate import stream

    sampling.check()
    prompt, new = fit_to_block(ids, sampling.max_new_tokens, cm.block_size)
    temperature = float(sampling.temperature)
    kw = dict(temperature=temperature, stop_tokens=cm.stop_tokens,
              top_p=float(sampling.top_p) if temperature > 0 else None,
              seed=int(sampling.seed))  # fmt: skip
    out: list[int] = []
    text = ""
    for token in stream(cm.model, prompt, new, **kw):
        out.append(int(token))
        text = cm.decode(out)
        yield len(out), text.rstrip("\ufffd")
    if text.endswith("\ufffd"):  # the reply really ends with a broken character: show it
        yield len(out), text


def stream_reply(cm: ChatModel, ids: list[int], sampling: Sampling) -> Iterator[str]:
    """The reply's text so far, after each new token (``reply_steps`` without the counts)."""
    for _, text in reply_steps(cm, ids, sampling):
        yield text


def timed_stream(cm: ChatModel, ids: list[int], sampling: Sampling) -> Iterator[tuple[str, str]]:
    """``reply_steps`` with a status line: (text so far, "N tokens, X tokens/s"). Only the time
    spent producing tokens counts, not the time the caller holds the generator (the page's
    update, or the other model's step in the Compare tab)."""
    steps, busy = reply_steps(cm, ids, sampling), 0.0
    while True:
        t0 = time.perf_counter()
        try:
            n, text = next(steps)
        except StopIteration:
            return
        busy += time.perf_counter() - t0
        yield text, f"{n} tokens, {n / max(busy, 1e-9):.1f} tokens/s"


def incremental_pieces(token_bytes: list[bytes]) -> list[str]:
    """The text each token adds, decoding the bytes in order: a token ending inside a UTF-8
    character adds "" and the one that completes it adds the character; the pieces join to the
    decoded text. [b"h", b"\\xc3", b"\\xa9"] -> ["h", "", "é"]."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    pieces = [decoder.decode(b) for b in token_bytes]
    if pieces:
        pieces[-1] += decoder.decode(b"", final=True)
    return pieces


@torch.inference_mode()
def greedy_reply_ids(cm: ChatModel, ids: list[int], max_new_tokens: int) -> list[int]:
    """The new ids ``generate`` gives greedily (what the chat tab shows at temperature 0)."""
    from myllm101.fast.generate import generate

    prompt, new = fit_to_block(ids, max_new_tokens, cm.block_size)
    out = generate(cm.model, prompt, new, temperature=0.0, stop_tokens=cm.stop_tokens)
    reply = out[len(prompt) :]
    return reply[:-1] if reply and reply[-1] in cm.stop_tokens else reply
