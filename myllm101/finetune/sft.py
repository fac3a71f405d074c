"""Supervised fine-tuning examples for SmolLM2's chat template: loss on the response only.

    ids, labels = encode_sft({"instruction": "Who speaks ...?", "response": "Hamlet"}, tok, 256)
    batch = collate([(ids, labels), ...], pad_id=tok.eos_id)          # padded to the longest
    rows = pack([(ids, labels), ...], block_size=512, pad_id=tok.eos_id)  # several per row
    mask = packed_attention_mask(rows["segment_ids"])  # (R, T, T): each example sees only itself
    loss = model(batch["input_ids"], batch["attention_mask"], batch["labels"]).loss

One example is the ChatML text hub/smollm2.py's ``chat_prompt`` writes, plus the answer:

    <|im_start|>system\\n{DEFAULT_SYSTEM}<|im_end|>\\n<|im_start|>user\\n{instruction}<|im_end|>\\n
    <|im_start|>assistant\\n{response}<|im_end|>\\n
    |------------------------------ labels -100 -----------------------------|-- kept --|-100|

Labels line up with the ids (``labels[t]`` is ``ids[t]`` or -100) and the model shifts them:
position t is scored against ``labels[t + 1]`` (fast/blocks.py ``causal_lm_loss``). Every system,
user and template token is -100; the response's tokens and its closing ``<|im_end|>`` are kept (so
the model learns to stop); the final ``\\n`` is -100 (generation stops at ``<|im_end|>``). The
three parts are tokenized apart and concatenated, which equals tokenizing the whole text at once
(the special tokens split the text; tests/test_sft.py checks it on the real tokenizer), so the
prompt ids are exactly what ``chat_prompt(..., add_generation_prompt=True)`` gives at inference.

Packing (``pack``) puts several examples into one ``block_size`` row, in order (a new row when the
next one does not fit), then pads the row. Labels never cross examples: each example starts with
its -100 system tokens, and ``pack`` also sets every example's first label to -100, so the last
token of one example is never asked to predict the first token of the next. ATTENTION DOES CROSS
THEM: our models take a (B, T) padding mask, so with the causal mask alone a token of the second
example in a row also attends to the first example's tokens. The loss stays each example's own
tokens', but their logits see the earlier examples as context. ``segment_ids`` name each token's
example (0 = padding) and ``packed_attention_mask`` turns them into the block-diagonal causal
(B, T, T) mask that stops this: our models take it as their ``attention_mask`` (fast/blocks.py),
so each example of a packed row gets the logits it would get alone (tests/test_sft.py shows both
the crossing and the fix; ``myllm101 finetune --pack`` trains so). Positions run on across a
packed row (not reset per example): RoPE scores depend on relative positions only, so within one
example that changes nothing. Padding (``collate``) has none of these issues.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import torch

from myllm101.data.collate import IGNORE_INDEX, pad_to_longest
from myllm101.hub.smollm2 import chat_prompt

SPECIALS = ("<|im_start|>", "<|im_end|>")


class Tokenizer(Protocol):
    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: Sequence[int]) -> str: ...


def special_id(tokenizer: Tokenizer, token: str) -> int:
    """The one id ``token`` encodes to ('<|im_end|>' -> 2 for SmolLM2)."""
    ids = tokenizer.encode(token)
    if len(ids) != 1:
        raise ValueError(f"tokenizer: expected {token!r} to be one special token, got ids {ids}")
    return ids[0]


def check_example(example: dict) -> tuple[str, str]:
    """(instruction, response) of a {"instruction", "response", ...} dict, or a clear ValueError."""
    if not isinstance(example, dict) or not {"instruction", "response"} <= set(example):
        keys = sorted(example) if isinstance(example, dict) else type(example).__name__
        raise ValueError(f"example: expected a dict with instruction and response, got {keys}")
    instruction, response = example["instruction"], example["response"]
    for name, text in (("instruction", instruction), ("response", response)):
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"example {name}: expected a non-empty string, got {text!r}")
        found = [s for s in SPECIALS if s in text]
        if found:
            raise ValueError(f"example {name}: expected plain text, got chat tokens {found}")
    return instruction, response


def encode_sft(
    example: dict, tokenizer: Tokenizer, block_size: int, system: str | None = None
) -> tuple[list[int], list[int]]:
    """{"instruction", "response"} -> (ids, labels), both of length n <= block_size.

    labels[t] = ids[t] on the response tokens and their <|im_end|>, -100 everywhere else.
    ``system``: a system message instead of SmolLM2's default one.
    """
    instruction, response = check_example(example)
    messages = [{"role": "user", "content": instruction}]
    if system is not None:
        messages.insert(0, {"role": "system", "content": system})
    prompt = tokenizer.encode(chat_prompt(messages, add_generation_prompt=True))
    answer = tokenizer.encode(response) + [special_id(tokenizer, "<|im_end|>")]
    tail = tokenizer.encode("\n")
    ids = prompt + answer + tail
    if len(ids) > block_size:
        raise ValueError(
            f"example: expected at most block_size={block_size} tokens, got {len(ids)} "
            f"({len(prompt)} prompt + {len(answer)} response + {len(tail)})"
        )
    labels = [IGNORE_INDEX] * len(prompt) + answer + [IGNORE_INDEX] * len(tail)
    return ids, labels


def _check_pairs(pairs: Sequence[tuple[Sequence[int], Sequence[int]]]) -> None:
    if not pairs:
        raise ValueError("examples: expected at least one (ids, labels) pair, got none")
    for i, (ids, labels) in enumerate(pairs):
        if len(ids) != len(labels) or not ids:
            raise ValueError(
                f"examples[{i}]: expected ids and labels of one non-zero length, got "
                f"{len(ids)} and {len(labels)}"
            )


def collate(
    pairs: Sequence[tuple[Sequence[int], Sequence[int]]], pad_id: int
) -> dict[str, torch.Tensor]:
    """[(ids, labels), ...] -> {input_ids, attention_mask, labels}, each (B, T), right-padded to
    the longest; padding has attention_mask 0 and label -100."""
    _check_pairs(pairs)
    ids, mask = pad_to_longest([list(i) for i, _ in pairs], pad_id)
    labels, _ = pad_to_longest([list(lab) for _, lab in pairs], IGNORE_INDEX)
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def pack(
    pairs: Sequence[tuple[Sequence[int], Sequence[int]]], block_size: int, pad_id: int
) -> dict[str, torch.Tensor]:
    """[(ids, labels), ...] -> rows of exactly block_size tokens holding whole examples, in order.

    -> {input_ids, attention_mask, labels, segment_ids}, each (R, block_size); segment_ids are
    1, 2, ... for the examples of a row and 0 on its padding. Each example's first label is -100
    (nothing predicts across a boundary). Attention still crosses examples: see the module doc.
    """
    _check_pairs(pairs)
    too_long = [i for i, (ids, _) in enumerate(pairs) if len(ids) > block_size]
    if too_long:
        raise ValueError(
            f"examples {too_long[:5]}: expected at most block_size={block_size} tokens each, got "
            f"{[len(pairs[i][0]) for i in too_long[:5]]}"
        )
    rows: list[list[tuple[Sequence[int], Sequence[int]]]] = [[]]
    used = 0
    for ids, labels in pairs:
        if used + len(ids) > block_size:
            rows.append([])
            used = 0
        rows[-1].append((ids, labels))
        used += len(ids)
    R = len(rows)
    out_ids = torch.full((R, block_size), pad_id, dtype=torch.int64)
    out_labels = torch.full((R, block_size), IGNORE_INDEX, dtype=torch.int64)
    segments = torch.zeros((R, block_size), dtype=torch.int64)
    for r, row in enumerate(rows):
        t = 0
        for k, (ids, labels) in enumerate(row, start=1):
            n = len(ids)
            out_ids[r, t : t + n] = torch.tensor(list(ids))
            out_labels[r, t : t + n] = torch.tensor(list(labels))
            out_labels[r, t] = IGNORE_INDEX  # the previous example's last token predicts nothing
            segments[r, t : t + n] = k
            t += n
    return {
        "input_ids": out_ids,
        "attention_mask": (segments > 0).long(),
        "labels": out_labels,
        "segment_ids": segments,
    }


def packed_attention_mask(segment_ids: torch.Tensor) -> torch.Tensor:
    """segment_ids (B, T) -> (B, T, T) bool, True where query t may attend to key s: s <= t and
    both in the same example (padding attends only to itself, so no row is empty)."""
    T = segment_ids.shape[-1]
    causal = torch.ones(T, T, dtype=torch.bool).tril()  # (T, T)
    same = segment_ids[:, :, None] == segment_ids[:, None, :]  # (B, T, T)
    return same & causal
