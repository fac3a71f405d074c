"""WordPiece (BERT's tokenizer), fast: the same ``WordPieceTokenizer`` as reference/wordpiece.py,
same ids, in optimized pure Python (no torch, no compiled tokenizer). Read it next to the reference:

- basic tokenization is three ``str.translate`` passes over the whole text instead of a Python loop
  per character: clean + CJK spacing, accent stripping (after one NFD, skipped for ASCII text), and
  punctuation spacing, each through a table that classifies a character the first time it is seen
  (a dict with ``__missing__``) and then answers from C;
- WordPiece runs once per distinct word (word -> ids cache), and its longest-match search starts at
  the longest vocabulary entry instead of the end of the word (O(len * max_piece) lookups);
- the special tokens are split out of the text by one compiled regex.
"""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
PADDING = (False, "longest", "max_length")
_SPECIAL_SPLIT = re.compile("(" + "|".join(re.escape(s) for s in SPECIAL_TOKENS) + ")").split


def load_vocab(path) -> dict[str, int]:
    """vocab.txt (one token per line; the line number is the id) -> {token: id}."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file (expected a WordPiece vocab.txt)")
    lines = path.read_text(encoding="utf-8").split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the final newline
    vocab: dict[str, int] = {}
    for i, line in enumerate(lines):
        vocab.setdefault(line.rstrip("\r"), i)
    return vocab


def _is_cjk(cp: int) -> bool:
    return (
        0x4E00 <= cp <= 0x9FFF
        or 0x3400 <= cp <= 0x4DBF
        or 0x20000 <= cp <= 0x2A6DF
        or 0x2A700 <= cp <= 0x2B73F
        or 0x2B740 <= cp <= 0x2B81F
        or 0x2B820 <= cp <= 0x2CEAF
        or 0xF900 <= cp <= 0xFAFF
        or 0x2F800 <= cp <= 0x2FA1F
    )


class _CleanTable(dict):
    """str.translate table: drop NUL/U+FFFD/controls, whitespace -> ' ', CJK -> ' X '."""

    def __missing__(self, cp: int):
        ch = chr(cp)
        cat = unicodedata.category(ch)
        if ch in "\t\n\r" or cat == "Zs":
            value = " "
        elif cp == 0 or cp == 0xFFFD or cat.startswith("C"):
            value = None
        elif _is_cjk(cp):
            value = f" {ch} "
        else:
            value = cp  # unchanged
        self[cp] = value
        return value


class _MarkTable(dict):
    """str.translate table: drop combining marks (category Mn), keep everything else."""

    def __missing__(self, cp: int):
        value = None if unicodedata.category(chr(cp)) == "Mn" else cp
        self[cp] = value
        return value


class _PunctTable(dict):
    """str.translate table: punctuation -> ' p ' (so str.split() makes it a word of its own)."""

    def __missing__(self, cp: int):
        ascii_punct = 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126
        ch = chr(cp)
        value = f" {ch} " if ascii_punct or unicodedata.category(ch).startswith("P") else cp
        self[cp] = value
        return value


_CLEAN, _MARKS, _PUNCT = _CleanTable(), _MarkTable(), _PunctTable()


def basic_tokenize(
    text: str,
    do_lower_case: bool = True,
    strip_accents_: bool | None = None,
    tokenize_chinese_chars: bool = True,
) -> list[str]:
    """Text -> words: 'Héllo, 世界!' -> ['hello', ',', '世', '界', '!'] (as the reference)."""
    if not tokenize_chinese_chars:
        raise ValueError("tokenize_chinese_chars=False: not supported by the fast tokenizer")
    text = text.translate(_CLEAN)  # clean + CJK spacing in one pass
    strip = do_lower_case if strip_accents_ is None else strip_accents_
    if strip and not text.isascii():
        text = unicodedata.normalize("NFD", text).translate(_MARKS)
    if do_lower_case:
        text = text.lower()
    return text.translate(_PUNCT).split()


class WordPieceTokenizer:
    """BERT's tokenizer. vocab: {token: id} (or a vocab.txt path via ``from_file``)."""

    max_cache = 1 << 18  # distinct words kept before the cache is cleared

    def __init__(
        self,
        vocab: dict[str, int],
        do_lower_case: bool = True,
        strip_accents: bool | None = None,
        tokenize_chinese_chars: bool = True,
        max_input_chars_per_word: int = 100,
    ):
        missing = [t for t in SPECIAL_TOKENS if t not in vocab]
        if missing:
            raise ValueError(
                f"vocab: expected the special tokens {list(SPECIAL_TOKENS)}, missing {missing}"
            )
        if not tokenize_chinese_chars:
            raise ValueError("tokenize_chinese_chars=False: not supported by the fast tokenizer")
        self.vocab = dict(vocab)
        self.inv_vocab = {i: t for t, i in self.vocab.items()}
        self.do_lower_case = do_lower_case
        self.strip_accents = strip_accents
        self.tokenize_chinese_chars = tokenize_chinese_chars
        self.max_chars = max_input_chars_per_word
        self.pad_id, self.unk_id = self.vocab["[PAD]"], self.vocab["[UNK]"]
        self.cls_id, self.sep_id = self.vocab["[CLS]"], self.vocab["[SEP]"]
        self.mask_id = self.vocab["[MASK]"]
        # the longest piece in characters (without "##"): no match can be longer
        self._longest = max(len(t[2:]) if t.startswith("##") else len(t) for t in self.vocab)
        self._cache: dict[str, tuple[int, ...]] = {}

    @classmethod
    def from_file(cls, path, **kwargs) -> WordPieceTokenizer:
        return cls(load_vocab(path), **kwargs)

    def __len__(self) -> int:
        return len(self.vocab)

    def _wordpiece(self, word: str) -> tuple[int, ...]:
        """Greedy longest match, as ids; (unk,) for a word with an unmatchable position."""
        vocab, n = self.vocab, len(word)
        if n > self.max_chars:
            return (self.unk_id,)
        ids, start = [], 0
        while start < n:
            end = min(n, start + self._longest)
            prefix = "##" if start else ""
            while end > start:
                i = vocab.get(prefix + word[start:end])
                if i is not None:
                    break
                end -= 1
            else:
                return (self.unk_id,)
            ids.append(i)
            start = end
        return tuple(ids)

    def _ids_plain(self, text: str) -> list[int]:
        words = basic_tokenize(
            text, self.do_lower_case, self.strip_accents, self.tokenize_chinese_chars
        )
        cache = self._cache
        if len(cache) > self.max_cache:
            cache.clear()
        out: list[int] = []
        for w in words:
            ids = cache.get(w)
            if ids is None:
                ids = cache[w] = self._wordpiece(w)
            out.extend(ids)
        return out

    def _ids(self, text: str) -> list[int]:
        if not isinstance(text, str):
            raise ValueError(f"text: expected str, got {type(text).__name__}")
        if "[" not in text:  # no special token can be in it
            return self._ids_plain(text)
        out: list[int] = []
        for j, part in enumerate(_SPECIAL_SPLIT(text)):
            if j % 2:  # odd positions hold the special tokens themselves
                out.append(self.vocab[part])
            elif part:
                out.extend(self._ids_plain(part))
        return out

    def tokenize(self, text: str) -> list[str]:
        """Text -> WordPiece tokens (strings), without [CLS]/[SEP]."""
        return [self.inv_vocab[i] for i in self._ids(text)]

    def encode(
        self,
        text: str,
        text_pair: str | None = None,
        add_special_tokens: bool = True,
        max_length: int | None = None,
        truncation: bool = False,
    ) -> dict[str, list[int]]:
        """-> {"input_ids", "token_type_ids", "attention_mask"} for one text (or a pair)."""
        a = self._ids(text)
        b = None if text_pair is None else self._ids(text_pair)
        if truncation and max_length is not None:
            n_special = (2 + (b is not None)) if add_special_tokens else 0
            budget = max(max_length - n_special, 0)
            if b is None:
                del a[budget:]
            else:
                keep_a, keep_b = truncate_pair(len(a), len(b), budget)
                del a[keep_a:], b[keep_b:]
        if add_special_tokens:
            ids = [self.cls_id, *a, self.sep_id]
            n_a = len(ids)
            if b is not None:
                ids += [*b, self.sep_id]
        else:
            ids = a + (b or [])
            n_a = len(a)
        types = [0] * n_a + [1] * (len(ids) - n_a)
        return {"input_ids": ids, "token_type_ids": types, "attention_mask": [1] * len(ids)}

    def __call__(
        self,
        texts,
        text_pairs=None,
        add_special_tokens: bool = True,
        max_length: int | None = None,
        truncation: bool = False,
        padding: bool | str = False,
    ) -> dict[str, list]:
        """One text -> encode(); a list -> the same keys holding one list per text, padded on the
        right with [PAD] (``padding`` "longest"/True or "max_length")."""
        if isinstance(texts, str):
            return self.encode(texts, text_pairs, add_special_tokens, max_length, truncation)
        if padding is True:
            padding = "longest"
        if padding not in PADDING:
            raise ValueError(f"padding: expected one of {PADDING} or True, got {padding!r}")
        if padding == "max_length" and max_length is None:
            raise ValueError("padding='max_length': expected max_length, got None")
        texts = list(texts)
        pairs = [None] * len(texts) if text_pairs is None else list(text_pairs)
        if len(pairs) != len(texts):
            raise ValueError(f"text_pairs: expected {len(texts)} pairs, got {len(pairs)}")
        rows = [
            self.encode(t, p, add_special_tokens, max_length, truncation)
            for t, p in zip(texts, pairs)
        ]
        longest = max((len(r["input_ids"]) for r in rows), default=0)
        width = max_length if padding == "max_length" else longest
        out = {"input_ids": [], "token_type_ids": [], "attention_mask": []}
        for r in rows:
            n = max(width - len(r["input_ids"]), 0) if padding else 0
            out["input_ids"].append(r["input_ids"] + [self.pad_id] * n)
            out["token_type_ids"].append(r["token_type_ids"] + [0] * n)
            out["attention_mask"].append(r["attention_mask"] + [0] * n)
        return out

    def decode(self, ids, skip_special_tokens: bool = True) -> str:
        """Ids -> text: '##' pieces are glued to the piece before them."""
        tokens = [self.inv_vocab[int(i)] for i in ids]
        if skip_special_tokens:
            tokens = [t for t in tokens if t not in SPECIAL_TOKENS]
        return " ".join(tokens).replace(" ##", "")


def truncate_pair(n_a: int, n_b: int, budget: int) -> tuple[int, int]:
    """Tokens of a and b to keep, longest first (tokenizers' rule; see the reference)."""
    if n_a + n_b <= budget:
        return n_a, n_b
    short, swap = min(n_a, n_b), n_a > n_b
    keep_short = short
    keep_long = short if short > budget else max(short, budget - short)
    if keep_short + keep_long > budget:
        keep_short = budget // 2
        keep_long = keep_short + budget % 2
    return (keep_long, keep_short) if swap else (keep_short, keep_long)
