"""WordPiece (BERT's tokenizer), fast: the same ``WordPieceTokenizer`` as reference/wordpiece.py,
same ids, in optimized pure Python (no torch, no compiled tokenizer). Read it next to the reference:

- basic tokenization is three ``str.translate`` passes over the whole text instead of a Python loop
  per character: clean + CJK spacing, accent stripping (after one NFD, skipped for ASCII text), and
  punctuation spacing, each through a table that classifies a character the first time it is seen
  (a dict with ``__missing__``, using the reference's ``is_*`` definitions) and then answers from C;
- WordPiece runs once per distinct word (word -> ids cache), and its longest-match search starts at
  the longest vocabulary entry instead of the end of the word (O(len * max_piece) lookups);
- the special tokens are split out of the text by one compiled regex.

Loading vocab.txt, pairs, truncation, padding and decoding are bookkeeping, not speed: the class
inherits them from the reference.
"""

from __future__ import annotations

import re
import unicodedata

from myllm101.reference.wordpiece import (
    SPECIAL_TOKENS,
    is_cjk,
    is_control,
    is_punctuation,
    is_whitespace,
    load_vocab,
    truncate_pair,
)
from myllm101.reference.wordpiece import WordPieceTokenizer as _ReferenceWordPiece

__all__ = ["WordPieceTokenizer", "basic_tokenize", "load_vocab", "truncate_pair"]
_SPECIAL_SPLIT = re.compile("(" + "|".join(re.escape(s) for s in SPECIAL_TOKENS) + ")").split


class _CleanTable(dict):
    """str.translate table: drop NUL/U+FFFD/controls, whitespace -> ' ', CJK -> ' X '."""

    def __missing__(self, cp: int):
        ch = chr(cp)  # classified once per character, with the reference's definitions
        if is_whitespace(ch):
            value = " "
        elif cp == 0 or cp == 0xFFFD or is_control(ch):
            value = None
        elif is_cjk(ch):
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
        ch = chr(cp)
        value = f" {ch} " if is_punctuation(ch) else cp
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


class WordPieceTokenizer(_ReferenceWordPiece):
    """BERT's tokenizer. vocab: {token: id} (or a vocab.txt path via ``from_file``). Encoding
    pairs, truncation, padding and decoding are the reference's (plain bookkeeping); the text ->
    ids path below is what is made fast."""

    max_cache = 1 << 18  # distinct words kept before the cache is cleared

    def __init__(
        self,
        vocab: dict[str, int],
        do_lower_case: bool = True,
        strip_accents: bool | None = None,
        tokenize_chinese_chars: bool = True,
        max_input_chars_per_word: int = 100,
    ):
        if not tokenize_chinese_chars:
            raise ValueError("tokenize_chinese_chars=False: not supported by the fast tokenizer")
        super().__init__(vocab, do_lower_case, strip_accents, tokenize_chinese_chars,
                         max_input_chars_per_word)  # fmt: skip
        # the longest piece in characters (without "##"): no match can be longer
        self._longest = max(len(t[2:]) if t.startswith("##") else len(t) for t in self.vocab)
        self._cache: dict[str, tuple[int, ...]] = {}

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
