"""The tokenizer playground: a text as coloured tokens with their ids, and the reference (NumPy
tree, pure Python) against the fast tokenizer's encode time on it.

    rows = token_rows(tok, "Hello wörld")   # [(piece, id), ...]; the pieces join to the text
    html = tokens_html(rows)                  # one coloured <span> per token, its id in the title
    t = encode_timing(tok, "Hello wörld")    # {"reference_ms", "fast_ms", "speedup", "same_ids"}

Both tokenizers are built from the same vocabulary (ranks, split pattern, special tokens), so they
give the same ids (parity_tests/ prove it; the playground shows it for the text at hand).
"""

from __future__ import annotations

import html
import time

from myllm101.ui.chat import bpe_of, incremental_pieces

# pale colours that dark text reads on; consecutive tokens never share one
PALETTE = ("#fde68a", "#a7f3d0", "#bfdbfe", "#fbcfe8", "#ddd6fe", "#fed7aa", "#bbf7d0", "#e5e7eb")


def encode_ids(tokenizer, text: str, vocab_size: int | None = None) -> list[int]:
    """The ids the app feeds the model: special tokens written in the text become their ids;
    with ``vocab_size``, ids the model's embedding lacks are left out (as GGUFTokenizer does)."""
    if not isinstance(text, str):
        raise TypeError(f"text: expected a str, got {type(text).__name__}")
    ids = bpe_of(tokenizer).encode(text, allowed_special="all")
    return ids if vocab_size is None else [i for i in ids if i < vocab_size]


def token_rows(tokenizer, text: str, vocab_size: int | None = None) -> list[tuple[str, int]]:
    """[(the text this token adds, id)] for ``encode_ids(text)``: a token ending inside a UTF-8
    character adds "" and the next one the whole character (``incremental_pieces``)."""
    ids = encode_ids(tokenizer, text, vocab_size)
    return list(zip(id_pieces(tokenizer, ids), ids))


def id_pieces(tokenizer, ids: list[int]) -> list[str]:
    """The text each id adds (``incremental_pieces`` of the tokens' bytes); a special token adds
    its own name ("<|im_end|>"), an id the tokenizer lacks adds "\ufffd"."""
    bpe = bpe_of(tokenizer)
    return incremental_pieces([bpe.token_bytes(i) if i < bpe.n_vocab else b"\xff" for i in ids])


def token_colours(n: int) -> list[str]:
    """A colour per token, cycling through PALETTE: 3 -> ["#fde68a", "#a7f3d0", "#bfdbfe"]."""
    return [PALETTE[i % len(PALETTE)] for i in range(n)]


def shown(piece: str) -> str:
    """A piece as it is drawn: spaces as "·", newlines as "↵" (so every token is visible), a
    partial character as "▯"."""
    if piece == "":
        return "▯"
    return piece.replace(" ", "·").replace("\n", "↵\n").replace("\t", "→")


def tokens_html(rows: list[tuple[str, int]]) -> str:
    """One <span> per token, coloured, its id in the hover title and a data-id attribute."""
    spans = [
        f'<span class="tok" data-id="{i}" title="id {i}" style="background:{c};color:#111;'
        f'padding:1px 2px;margin:1px;border-radius:3px;white-space:pre-wrap">'
        f"{html.escape(shown(p))}</span>"
        for (p, i), c in zip(rows, token_colours(len(rows)))
    ]
    return f'<div class="tokens" style="line-height:2;font-family:monospace">{"".join(spans)}</div>'


def reference_twin(tokenizer):
    """The reference (NumPy tree) Tokenizer of the same vocabulary as our fast one."""
    from myllm101.reference.bpe import Tokenizer

    fast = bpe_of(tokenizer)
    return Tokenizer(fast.mergeable_ranks, fast.pattern, fast.special_tokens, fast.name)


def best_time_ms(fn, repeats: int) -> float:
    """The fastest of ``repeats`` calls of ``fn()``, in milliseconds."""
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best * 1e3


def encode_timing(tokenizer, text: str, reference=None, repeats: int = 3) -> dict:
    """Encode ``text`` with the reference and the fast tokenizer: the best of ``repeats`` times
    each (the fast one's piece cache is warm after the first call), and whether the ids agree."""
    if repeats < 1:
        raise ValueError(f"repeats: expected >= 1, got {repeats}")
    fast = bpe_of(tokenizer)
    reference = reference_twin(tokenizer) if reference is None else reference
    ids = {}

    def run(name, tok):
        ids[name] = tok.encode(text, allowed_special="all")

    ref_ms = best_time_ms(lambda: run("reference", reference), repeats)
    fast_ms = best_time_ms(lambda: run("fast", fast), repeats)
    return {"reference_ms": ref_ms, "fast_ms": fast_ms, "speedup": ref_ms / max(fast_ms, 1e-9),
            "same_ids": ids["reference"] == ids["fast"], "tokens": len(ids["fast"]),
            "repeats": repeats}  # fmt: skip


def timing_markdown(t: dict) -> str:
    same = "yes" if t["same_ids"] else "**NO**"
    return (
        f"| encode | time (best of {t['repeats']}) |\n|---|---|\n"
        f"| reference (reference/bpe.py) | {t['reference_ms']:.3f} ms |\n"
        f"| fast (fast/bpe.py) | {t['fast_ms']:.3f} ms |\n\n"
        f"{t['tokens']} tokens; fast is {t['speedup']:.1f}x the reference's speed; same ids: {same}"
    )
