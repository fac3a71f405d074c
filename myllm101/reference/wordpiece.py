"""WordPiece (BERT's tokenizer), reference: plain Python, one character at a time.

Two stages, as in the original BERT code:

1. basic tokenization (text -> words):
   - clean: drop NUL, U+FFFD and control characters; every whitespace character becomes a space
   - put spaces around CJK ideographs (each becomes its own word)
   - lower-case, then strip accents: NFD splits "é" into "e" + U+0301, and the combining mark
     (category Mn) is dropped
   - split on whitespace, then split off every punctuation character as its own word
2. WordPiece (word -> pieces): greedy longest match from the left; every piece after the first is
   looked up with a "##" prefix. "unaffable" -> ["un", "##aff", "##able"]. A word with a position
   where nothing matches, or longer than 100 characters, becomes the single token [UNK].

Then the model's input: [CLS] a [SEP] (and b [SEP] for a pair, with token_type_ids 1 for b's part),
truncation (the longer sequence loses tokens first) and padding with [PAD] (attention_mask 0).
Special-token strings written in the text ("[SEP]") are taken as those tokens, like HF.

``WordPieceTokenizer(vocab).encode("Hello, world!")`` gives the ids of HF's ``BertTokenizer`` with
the same vocab.txt (parity_tests/test_wordpiece.py).
"""

from __future__ import annotations

import unicodedata
from pathlib import Path

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
PADDING = (False, "longest", "max_length")


def load_vocab(path) -> dict[str, int]:
    """vocab.txt (one token per line; the line number is the id) -> {token: id}."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file (expected a WordPiece vocab.txt)")
    vocab: dict[str, int] = {}
    for i, line in enumerate(path.read_text(encoding="utf-8").split("\n")):
        token = line.rstrip("\r")
        if token == "" and i > 0 and i == len(vocab):
            continue  # the empty string after the final newline
        vocab.setdefault(token, i)
    return vocab


# ---- character classes (the same definitions as BERT's tokenization.py) ----------------------


def is_whitespace(ch: str) -> bool:
    """Space, tab, newline, carriage return, or a Unicode space separator (Zs)."""
    return ch in " \t\n\r" or unicodedata.category(ch) == "Zs"


def is_control(ch: str) -> bool:
    """A control/format character (category C*), except tab/newline/CR (those are whitespace)."""
    if ch in "\t\n\r":
        return False
    return unicodedata.category(ch).startswith("C")


def is_punctuation(ch: str) -> bool:
    """Every non-letter, non-digit ASCII printable ($, +, ^, ` included) or Unicode P* character."""
    cp = ord(ch)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(ch).startswith("P")


def is_cjk(ch: str) -> bool:
    """A CJK Unified Ideograph (Chinese characters, Japanese kanji); not kana or hangul."""
    cp = ord(ch)
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


# ---- stage 1: basic tokenization --------------------------------------------------------------


def clean_text(text: str) -> str:
    out = []
    for ch in text:
        if ord(ch) == 0 or ord(ch) == 0xFFFD or is_control(ch):
            continue
        out.append(" " if is_whitespace(ch) else ch)
    return "".join(out)


def space_cjk(text: str) -> str:
    return "".join(f" {ch} " if is_cjk(ch) else ch for ch in text)


def strip_accents(text: str) -> str:
    """'café' -> 'cafe': decompose (NFD), then drop the combining marks."""
    return "".join(
        ch for ch in unicodedata.normalize("NFD", text) if unicodedata.category(ch) != "Mn"
    )


def split_punctuation(word: str) -> list[str]:
    """'hello,world!' -> ['hello', ',', 'world', '!']."""
    pieces: list[str] = []
    current = ""
    for ch in word:
        if is_punctuation(ch):
            if current:
                pieces.append(current)
            pieces.append(ch)
            current = ""
        else:
            current += ch
    if current:
        pieces.append(current)
    return pieces


def basic_tokenize(
    text: str,
    do_lower_case: bool = True,
    strip_accents_: bool | None = None,
    tokenize_chinese_chars: bool = True,
) -> list[str]:
    """Text -> words: 'Héllo, 世界!' -> ['hello', ',', '世', '界', '!'].

    strip_accents_ None follows do_lower_case (HF's default)."""
    text = clean_text(text)
    if tokenize_chinese_chars:
        text = space_cjk(text)
    strip = do_lower_case if strip_accents_ is None else strip_accents_
    words = []
    for word in text.split():
        if strip:
            word = strip_accents(word)  # NFD first, then lower (as the Rust normalizer does)
        if do_lower_case:
            word = word.lower()
        words.extend(split_punctuation(word))
    return [w for w in words if w]


# ---- stage 2: WordPiece -----------------------------------------------------------------------


def wordpiece(
    word: str, vocab: dict[str, int], unk: str = "[UNK]", max_chars: int = 100
) -> list[str]:
    """Greedy longest-match-first: 'unaffable' -> ['un', '##aff', '##able'] (or [unk])."""
    if len(word) > max_chars:
        return [unk]
    pieces, start = [], 0
    while start < len(word):
        end = len(word)
        match = None
        while start < end:  # shrink the candidate from the right until it is in the vocab
            candidate = word[start:end] if start == 0 else "##" + word[start:end]
            if candidate in vocab:
                match = candidate
                break
            end -= 1
        if match is None:
            return [unk]  # one unmatchable position spoils the whole word
        pieces.append(match)
        start = end
    return pieces


# ---- the tokenizer ----------------------------------------------------------------------------


def truncate_pair(n_a: int, n_b: int, budget: int) -> tuple[int, int]:
    """How many tokens of a and b to keep, longest first (tokenizers' rule): the shorter one is
    kept whole if it fits in half; if both are longer, a gets budget // 2 and b the rest (the
    longer of the two gets the odd token)."""
    if n_a + n_b <= budget:
        return n_a, n_b
    short = min(n_a, n_b)
    swap = n_a > n_b
    keep_short = short
    keep_long = short if short > budget else max(short, budget - short)
    if keep_short + keep_long > budget:
        keep_short = budget // 2
        keep_long = keep_short + budget % 2
    return (keep_long, keep_short) if swap else (keep_short, keep_long)


class WordPieceTokenizer:
    """BERT's tokenizer. vocab: {token: id} (or a vocab.txt path via ``from_file``)."""

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
        self.vocab = dict(vocab)
        self.inv_vocab = {i: t for t, i in self.vocab.items()}
        self.do_lower_case = do_lower_case
        self.strip_accents = strip_accents
        self.tokenize_chinese_chars = tokenize_chinese_chars
        self.max_chars = max_input_chars_per_word
        self.pad_id, self.unk_id = self.vocab["[PAD]"], self.vocab["[UNK]"]
        self.cls_id, self.sep_id = self.vocab["[CLS]"], self.vocab["[SEP]"]
        self.mask_id = self.vocab["[MASK]"]

    @classmethod
    def from_file(cls, path, **kwargs) -> WordPieceTokenizer:
        return cls(load_vocab(path), **kwargs)

    def __len__(self) -> int:
        return len(self.vocab)

    def _split_specials(self, text: str) -> list[str]:
        """'a [SEP] b' -> ['a ', '[SEP]', ' b'] (special tokens in the text stay whole)."""
        parts = [text]
        for special in SPECIAL_TOKENS:
            new = []
            for part in parts:
                if part in SPECIAL_TOKENS:
                    new.append(part)
                    continue
                chunks = part.split(special)
                for j, chunk in enumerate(chunks):
                    if j:
                        new.append(special)
                    new.append(chunk)
            parts = new
        return parts

    def tokenize(self, text: str) -> list[str]:
        """Text -> WordPiece tokens (strings), without [CLS]/[SEP]."""
        if not isinstance(text, str):
            raise ValueError(f"text: expected str, got {type(text).__name__}")
        tokens = []
        for part in self._split_specials(text):
            if part in SPECIAL_TOKENS:
                tokens.append(part)
                continue
            words = basic_tokenize(
                part, self.do_lower_case, self.strip_accents, self.tokenize_chinese_chars
            )
            for word in words:
                tokens.extend(wordpiece(word, self.vocab, "[UNK]", self.max_chars))
        return tokens

    def _ids(self, text: str) -> list[int]:
        return [self.vocab[t] for t in self.tokenize(text)]

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
                a = a[:budget]
            else:
                keep_a, keep_b = truncate_pair(len(a), len(b), budget)
                a, b = a[:keep_a], b[:keep_b]
        if add_special_tokens:
            ids = [self.cls_id, *a, self.sep_id]
            types = [0] * len(ids)
            if b is not None:
                ids += [*b, self.sep_id]
                types += [1] * (len(b) + 1)
        else:
            ids = a + (b or [])
            types = [0] * len(a) + [1] * len(b or [])
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
        texts = list(texts)
        pairs = [None] * len(texts) if text_pairs is None else list(text_pairs)
        if len(pairs) != len(texts):
            raise ValueError(f"text_pairs: expected {len(texts)} pairs, got {len(pairs)}")
        rows = [
            self.encode(t, p, add_special_tokens, max_length, truncation)
            for t, p in zip(texts, pairs)
        ]
        if padding == "max_length" and max_length is None:
            raise ValueError("padding='max_length': expected max_length, got None")
        width = (
            max_length
            if padding == "max_length"
            else max((len(r["input_ids"]) for r in rows), default=0)
        )
        out = {"input_ids": [], "token_type_ids": [], "attention_mask": []}
        for r in rows:
            n = max(width - len(r["input_ids"]), 0) if padding else 0
            out["input_ids"].append(r["input_ids"] + [self.pad_id] * n)
            out["token_type_ids"].append(r["token_type_ids"] + [0] * n)
            out["attention_mask"].append(r["attention_mask"] + [0] * n)
        return out

    def decode(self, ids, skip_special_tokens: bool = True) -> str:
        """Ids -> text: '##' pieces are glued to the piece before them (lower-cased text back)."""
        tokens = [self.inv_vocab[int(i)] for i in ids]
        if skip_special_tokens:
            tokens = [t for t in tokens if t not in SPECIAL_TOKENS]
        return " ".join(tokens).replace(" ##", "")
