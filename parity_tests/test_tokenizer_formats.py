"""Tokenizer files: our format round-trips; tiktoken and HF tokenizers give our ids on the exports.

tiktoken and tokenizers are oracles here only (myllm101 never imports them). Ids must be equal
exactly: a tokenizer has no tolerance.
"""

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from myllm101.bpe_patterns import GPT2_SPLIT_PATTERN, GPT4_SPLIT_PATTERN
from myllm101.fast.bpe import bpe_train
from myllm101.tokenizer import formats, hf_format
from myllm101.tokenizer.pretrained import load_pretrained
from parity_tests.helpers import examples

tiktoken = pytest.importorskip("tiktoken")
hf_tokenizers = pytest.importorskip("tokenizers")

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT / "data/shakespeare"
FALLBACK = (
    "To be, or not to be, that is the question:\nWhether 'tis nobler in the mind to suffer\n"
    "The slings and arrows of outrageous fortune,\nOr to take arms against a sea of troubles\n"
) * 40
SPECIAL = "<|endoftext|>"


def corpus_slice(split: str, n_chars: int) -> str:
    path = CORPUS / f"{split}.txt"
    return path.read_text()[:n_chars] if path.exists() else FALLBACK[:n_chars]


@pytest.fixture(scope="module", params=["gpt2", "gpt4"])
def trained(request):
    pattern = {"gpt2": GPT2_SPLIT_PATTERN, "gpt4": GPT4_SPLIT_PATTERN}[request.param]
    return bpe_train(corpus_slice("train", 60_000), 700, pattern=pattern, special_tokens=[SPECIAL])


@pytest.fixture(scope="module")
def gpt2():
    return load_pretrained("gpt2")


def tiktoken_of(tok):
    return tiktoken.Encoding(
        name=f"test-{tok.name}",
        pat_str=tok.pattern,
        mergeable_ranks=formats.to_tiktoken_ranks(tok),
        special_tokens=tok.special_tokens,
    )


def hf_of(tok):
    return hf_tokenizers.Tokenizer.from_str(json.dumps(hf_format.to_hf_tokenizer_json(tok)))


HELD_OUT = corpus_slice("val", 30_000)
TRICKY = [
    "",
    "  leading spaces and trailing   ",
    "line\n\n\nbreaks \n \n  end\n",
    "numbers 1234567 3.14159 and CamelCase ALLCAPS don't WE'LL",
    "unicode: naïve café 東京 🙂 ünïcödé",
    "tabs\tand\r\nwindows\rlines",
]


def test_save_load_round_trip(trained, tmp_path):
    path = formats.save_tokenizer(trained, tmp_path / "tok")
    assert path.name == formats.FILENAME
    for impl in formats.IMPLS:
        back = formats.load_tokenizer(tmp_path / "tok", impl)
        assert back.mergeable_ranks == trained.mergeable_ranks
        assert back.special_tokens == trained.special_tokens
        assert back.pattern == trained.pattern and back.name == trained.name
        assert back.encode(HELD_OUT) == trained.encode(HELD_OUT)
    assert not [p for p in (tmp_path / "tok").iterdir() if p.name != formats.FILENAME]  # no temp


def test_tiktoken_export_gives_identical_ids(trained, tmp_path):
    enc = tiktoken_of(trained)
    assert enc.encode_ordinary(HELD_OUT) == trained.encode_ordinary(HELD_OUT)
    for text in TRICKY:
        assert enc.encode_ordinary(text) == trained.encode_ordinary(text), repr(text)
    s = f"a{SPECIAL}b"
    assert enc.encode(s, allowed_special="all") == trained.encode(s, allowed_special="all")
    # the .tiktoken file holds the same ranks (parsed by tiktoken's own rule: base64 rank)
    path = formats.save_tiktoken_file(trained, tmp_path / "x.tiktoken")
    lines = [line.split() for line in path.read_text().splitlines()]
    import base64

    assert {base64.b64decode(t): int(r) for t, r in lines} == trained.mergeable_ranks


def test_hf_export_gives_identical_ids(trained, tmp_path):
    path = hf_format.save_hf_tokenizer_json(trained, tmp_path / "tokenizer.json")
    hf = hf_tokenizers.Tokenizer.from_file(str(path))
    assert hf.encode(HELD_OUT).ids == trained.encode(HELD_OUT)
    for text in TRICKY:
        assert hf.encode(text).ids == trained.encode_ordinary(text), repr(text)
    s = f"a{SPECIAL}b"
    assert hf.encode(s).ids == trained.encode(s, allowed_special="all")
    assert hf.decode(trained.encode(HELD_OUT)) == HELD_OUT


def test_hf_import_of_our_export(trained, tmp_path):
    path = hf_format.save_hf_tokenizer_json(trained, tmp_path / "tokenizer.json")
    back = hf_format.load_hf_tokenizer_json(path, "reference")
    assert back.mergeable_ranks == trained.mergeable_ranks
    assert back.special_tokens == trained.special_tokens
    for text in [HELD_OUT[:5000], *TRICKY]:
        assert back.encode_ordinary(text) == trained.encode_ordinary(text), repr(text)


# text drawn from all of Unicode except lone surrogates (not encodable; tiktoken replaces them)
texts = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=60) | st.text(
    alphabet=" \n\t'sdlmtvre.,!?0123456789aAbBzZ", max_size=60
)


@settings(max_examples=examples(60))
@given(text=texts)
def test_exports_agree_on_hypothesis_text(trained, text):
    ours = trained.encode_ordinary(text)
    assert tiktoken_of_cached(trained).encode_ordinary(text) == ours
    assert hf_of_cached(trained).encode(text).ids == ours


_CACHE: dict = {}


def tiktoken_of_cached(tok):
    return _CACHE.setdefault(("tt", id(tok)), tiktoken_of(tok))


def hf_of_cached(tok):
    return _CACHE.setdefault(("hf", id(tok)), hf_of(tok))


def test_gpt2_through_our_loader_to_hf(gpt2, tmp_path):
    path = hf_format.save_hf_tokenizer_json(gpt2, tmp_path / "tokenizer.json")
    hf = hf_tokenizers.Tokenizer.from_file(str(path))
    for text in [HELD_OUT, *TRICKY]:
        assert hf.encode(text).ids == gpt2.encode_ordinary(text), repr(text[:40])
    back = hf_format.load_hf_tokenizer_json(path)
    assert (
        back.mergeable_ranks == gpt2.mergeable_ranks and back.special_tokens == gpt2.special_tokens
    )


def test_hf_pattern_translation():
    # possessive marks dropped (but not the quantifier before them), $ -> \z, {1,3}+ -> {1,3}
    assert hf_format.hf_pattern(r"\p{L}++|\p{N}{1,3}+|\s++$|(?i:'s)|[+$]") == (
        r"\p{L}+|\p{N}{1,3}|\s+\z|(?i:'s)|[+$]"
    )


def test_merge_of_picks_the_bpe_split():
    ranks = {bytes([b]): b for b in range(256)} | {b"ab": 256, b"bc": 257, b"abc": 258}
    assert hf_format.merge_of(b"abc", ranks) == (b"ab", b"c")
    bad = {bytes([b]): b for b in range(256)} | {b"abc": 256}
    with pytest.raises(
        ValueError, match=r"expected to be the merge of two lower-ranked tokens, got 3"
    ):
        hf_format.merge_of(b"abc", bad)


# ---- bad files --------------------------------------------------------------------------------


@pytest.fixture()
def saved(trained, tmp_path):
    return formats.save_tokenizer(trained, tmp_path / "tok")


def test_truncated_file(saved):
    data = saved.read_bytes()
    saved.write_bytes(data[: len(data) // 2])
    with pytest.raises(
        ValueError, match=r"myllm101_tokenizer.json: .*expected JSON, got a parse error"
    ):
        formats.load_tokenizer(saved.parent)


def test_corrupted_rank_is_caught_by_the_checksum(saved):
    d = json.loads(saved.read_text())
    d["ranks"][300][1], d["ranks"][301][1] = d["ranks"][301][1], d["ranks"][300][1]
    saved.write_text(json.dumps(d))
    with pytest.raises(
        ValueError, match=r'ranks do not match "ranks_sha256" \(expected \w+, got \w+\)'
    ):
        formats.load_tokenizer(saved.parent)


@pytest.mark.parametrize(
    "edit,message",
    [
        (lambda d: d.update(format="tokenizer.json"), r'expected "format": "myllm101-bpe", got'),
        (lambda d: d.update(version=99), r'expected "version": 2 \(or 1\), got 99'),
        (lambda d: d["ranks"].pop(), r'expected \d+ ranks \("n_ranks"\), got \d+'),
        (lambda d: d["ranks"][5].__setitem__(0, "not base64!"), r"ranks\[5\]: expected base64"),
        (
            lambda d: d["ranks"][5].__setitem__(1, "5"),
            r"ranks\[5\]: expected \[base64 string, int\]",
        ),
        (lambda d: d.pop("pattern"), r'expected "pattern" of type str, got None'),
    ],
)
def test_wrong_or_broken_fields(saved, edit, message):
    d = json.loads(saved.read_text())
    edit(d)
    saved.write_text(json.dumps(d))
    with pytest.raises(ValueError, match=message):
        formats.load_tokenizer(saved.parent)


def test_missing_file_and_bad_impl(tmp_path, saved):
    with pytest.raises(FileNotFoundError, match="no such file"):
        formats.load_tokenizer(tmp_path / "nothing")
    with pytest.raises(
        ValueError, match=r"impl: expected one of \('fast', 'reference'\), got 'gpu'"
    ):
        formats.load_tokenizer(saved.parent, impl="gpu")


def test_hf_non_bpe_is_refused(tmp_path):
    path = tmp_path / "tokenizer.json"
    path.write_text(json.dumps({"model": {"type": "WordPiece", "vocab": {}}}))
    with pytest.raises(ValueError, match="expected model type BPE .*got WordPiece"):
        hf_format.load_hf_tokenizer_json(path)
    path.write_text(json.dumps({"model": {"type": "BPE", "vocab": {}, "merges": []},
                                "pre_tokenizer": {"type": "Whitespace"}}))  # fmt: skip
    with pytest.raises(ValueError, match=r"expected a byte-level BPE .*got \['Whitespace'\]"):
        hf_format.load_hf_tokenizer_json(path)
    path.write_text('{"model": {"type": "BP')
    with pytest.raises(ValueError, match="expected a tokenizer.json \\(JSON\\), got a parse error"):
        hf_format.load_hf_tokenizer_json(path)
