"""Input checks of byte-level BPE: vocabulary, special tokens and token ids (reference/bpe.py
and fast/bpe.py).

Pure Python, as myllm101/checks/__init__.py: no NumPy, no torch.
"""

from __future__ import annotations

from typing import Any

# byte-level BPE: vocabulary, special tokens and token ids (reference/bpe.py and fast/bpe.py)


def check_special_tokens(special_tokens: Any) -> list[str]:
    """``special_tokens`` (None or a list of strings) as a list of distinct non-empty strings."""
    if special_tokens is None:
        return []
    if isinstance(special_tokens, str) or not all(isinstance(s, str) for s in special_tokens):
        raise ValueError(
            f"special_tokens: expected a list of strings, got {type(special_tokens).__name__} "
            f"{special_tokens!r}"
        )
    specials = list(special_tokens)
    if len(set(specials)) != len(specials) or "" in specials:
        raise ValueError(f"special_tokens: expected distinct non-empty strings, got {specials}")
    return specials


def check_vocab_size(vocab_size: int, n_special: int) -> None:
    """A BPE vocabulary holds the 256 byte tokens and the special tokens at least."""
    if not isinstance(vocab_size, int) or vocab_size < 256 + n_special:
        raise ValueError(
            f"vocab_size={vocab_size} is too small: need at least 256 byte tokens + {n_special} "
            f"special tokens = {256 + n_special}"
        )


def check_bpe_vocab(mergeable_ranks, special_tokens) -> tuple[dict[bytes, int], dict[str, int]]:
    """Validate a vocabulary: every single byte, distinct ranks >= 0, special ids >= 0 distinct
    from each other and from the ranks. Returns copies (a tokenizer must not change when its input
    does)."""
    ranks = dict(mergeable_ranks)
    specials = dict(special_tokens or {})
    missing = [b for b in range(256) if bytes([b]) not in ranks]
    if missing:
        raise ValueError(
            f"mergeable_ranks: expected all 256 single bytes, got {256 - len(missing)} "
            f"(missing e.g. {bytes([missing[0]])!r})"
        )
    if len(set(ranks.values())) != len(ranks):
        raise ValueError(
            f"mergeable_ranks: expected distinct ranks, got {len(ranks)} tokens but "
            f"{len(set(ranks.values()))} distinct ranks"
        )
    clash = set(specials.values()) & set(ranks.values())
    if clash or len(set(specials.values())) != len(specials):
        raise ValueError(
            f"special_tokens: expected ids distinct from each other and from the ranks, got "
            f"{specials} (shared ids: {sorted(clash)})"
        )
    negative = sorted(i for i in (*ranks.values(), *specials.values()) if i < 0)
    if negative:
        raise ValueError(
            f"mergeable_ranks/special_tokens: expected ids >= 0, got negative id {negative[0]}"
        )
    return ranks, specials


def check_special_args(allowed_special, disallowed_special, special_tokens) -> tuple[set, set]:
    """tiktoken's rules: "all" means every special token; disallowed "all" means all not allowed.
    Returns (allowed, disallowed) as sets of names."""
    names = set(special_tokens)
    allowed = names if allowed_special == "all" else set(allowed_special)
    unknown = allowed - names
    if unknown:
        raise ValueError(
            f"allowed_special: expected names from {sorted(names)}, got unknown {sorted(unknown)}"
        )
    disallowed = names - allowed if disallowed_special == "all" else set(disallowed_special)
    return allowed, disallowed


def disallowed_special_error(token: str) -> ValueError:
    """The error for a disallowed special token found in the text (the caller raises it)."""
    return ValueError(
        f"encountered the disallowed special token {token!r} in the text; pass "
        f"allowed_special={{{token!r}}} to encode it as the special token, or "
        f"disallowed_special=() to encode it as plain text"
    )


def expect_token_id(token_id: Any, n_vocab: int, is_known: Any) -> int:
    """``token_id`` as an int, if it is one (not a bool) in [0, n_vocab) with ``is_known(id)``."""
    if isinstance(token_id, bool) or not hasattr(token_id, "__index__"):
        raise ValueError(f"token id: expected an int, got {type(token_id).__name__}")
    token_id = int(token_id)
    if not (0 <= token_id < n_vocab and is_known(token_id)):
        raise ValueError(
            f"token id {token_id} is not in the vocabulary (n_vocab={n_vocab}, "
            f"valid ids are 0..{n_vocab - 1} minus unused ones)"
        )
    return token_id
