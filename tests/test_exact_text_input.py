"""Exact text in, exact ids out: every reader of text to tokenize or train decodes the bytes as
UTF-8 with nothing changed (\\r\\n, lone \\r, a BOM, NULs), names the byte offset of invalid UTF-8
(or, with errors="replace", decodes it to U+FFFD), and ``tokenizer decode`` writes the exact bytes.

tiktoken is the oracle, built offline from our rank files as in parity_tests/test_bpe.py (never
get_encoding, which downloads).
"""

from __future__ import annotations

import io
import json
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tiktoken

from myllm101 import textio
from myllm101.hub import cli as hub_cli
from myllm101.tokenizer import cli as tok_cli
from myllm101.tokenizer import load_pretrained
from myllm101.tokenizer.formats import load_tokenizer

ROOT = Path(__file__).resolve().parents[1]
NAMES = ("gpt2", "cl100k_base")


def mixed_text(n_lines: int = 120, seed: int = 0) -> str:
    """A BOM, then lines of words, digits, NULs and non-ASCII text ending in \\r\\n, \\n or \\r."""
    rng = random.Random(seed)
    words = "hello naïve café 日本語 🎉 x\x00y \x00 42 don't /path".split(" ") + ["  "]
    ends = ["\r\n", "\n", "\r", "\r\n\r\n", "\n\n", " \r\n", "\r\r\n"]
    lines = [" ".join(rng.choice(words) for _ in range(rng.randint(0, 6))) for _ in range(n_lines)]
    return "\ufeff" + "".join(line + rng.choice(ends) for line in lines) + "last\rline"


TEXT = mixed_text()
RAW = TEXT.encode("utf-8")


@pytest.fixture(scope="module")
def oracles():
    """name -> tiktoken.Encoding from the same rank files as load_pretrained(name)."""
    out = {}
    for name in NAMES:
        f = load_pretrained(name)
        out[name] = tiktoken.Encoding(
            name=name,
            pat_str=f.pattern,
            mergeable_ranks=f.mergeable_ranks,
            special_tokens=f.special_tokens,
        )
    return out


def bytes_stdin(monkeypatch, data: bytes) -> None:
    """A real-looking stdin: a text layer that would translate newlines, over the raw bytes."""
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data), encoding="utf-8"))


def bytes_stdout(monkeypatch) -> io.BytesIO:
    """A stdout whose text layer would turn "\\n" into "\\r\\n"; returns the bytes underneath."""
    raw = io.BytesIO()
    monkeypatch.setattr(sys, "stdout", io.TextIOWrapper(raw, encoding="utf-8", newline="\r\n"))
    return raw


def test_sample_text_has_every_awkward_character():
    for s in ("\ufeff", "\r\n", "\r\r\n", "\x00", "é", "🎉"):
        assert s in TEXT
    assert "\rl" in TEXT and "\n" in TEXT.replace("\r\n", "")  # lone \r and lone \n too


# ---------------------------------------------------------------------------------------------
# textio


def test_read_text_exact_keeps_every_character(tmp_path, monkeypatch):
    (tmp_path / "t.txt").write_bytes(RAW)
    assert textio.read_text_exact(tmp_path / "t.txt") == TEXT
    assert textio.read_text_exact(str(tmp_path / "t.txt")) == TEXT
    bytes_stdin(monkeypatch, RAW)
    assert textio.read_text_exact("-") == TEXT
    monkeypatch.setattr(sys, "stdin", io.StringIO("already text\r\n"))  # no .buffer: as read
    assert textio.read_text_exact("-") == "already text\r\n"


def test_read_text_exact_errors(tmp_path, monkeypatch):
    data = "abc é\r\n".encode() + b"\xff" + b"rest"
    (tmp_path / "bad.txt").write_bytes(data)
    with pytest.raises(textio.InvalidUTF8Error) as info:
        textio.read_text_exact(tmp_path / "bad.txt", what="corpus")
    assert info.value.offset == 8 and isinstance(info.value, ValueError)
    assert str(info.value) == (
        f"corpus {tmp_path / 'bad.txt'}: expected UTF-8 text, got invalid UTF-8 at byte offset 8 "
        "(0xff): invalid start byte"
    )
    assert textio.read_text_exact(tmp_path / "bad.txt", errors="replace") == data.decode(
        "utf-8", errors="replace"
    )
    bytes_stdin(monkeypatch, data)
    with pytest.raises(ValueError, match=r"^input stdin: .*byte offset 8 \(0xff\)"):
        textio.read_text_exact("-")
    with pytest.raises(ValueError, match=r"errors: expected one of \['strict', 'replace'\], got"):
        textio.read_text_exact(tmp_path / "bad.txt", errors="ignore")
    with pytest.raises(ValueError, match=r"input: expected an existing file .*got '.*nope.txt'"):
        textio.read_text_exact(tmp_path / "nope.txt")
    with pytest.raises(ValueError, match=r"input: expected a file .*got the directory"):
        textio.read_text_exact(tmp_path)


# ---------------------------------------------------------------------------------------------
# tokenizer encode / show


@pytest.mark.parametrize("impl", ["fast", "reference"])
@pytest.mark.parametrize("name", NAMES)
def test_encode_file_ids_are_tiktokens_of_the_exact_text(name, impl, oracles, tmp_path, capsys):
    (tmp_path / "in.txt").write_bytes(RAW)
    argv = ["encode", "--tokenizer", name, "--impl", impl, str(tmp_path / "in.txt")]
    assert tok_cli.run(argv) == 0
    assert json.loads(capsys.readouterr().out) == oracles[name].encode_ordinary(RAW.decode("utf-8"))


@pytest.mark.parametrize("name", NAMES)
def test_encode_stdin_bytes(name, oracles, monkeypatch, capsys):
    bytes_stdin(monkeypatch, RAW)
    assert tok_cli.run(["encode", "--tokenizer", name, "-"]) == 0
    assert json.loads(capsys.readouterr().out) == oracles[name].encode_ordinary(TEXT)


def test_encode_invalid_utf8_names_the_offset(oracles, tmp_path, monkeypatch, capsys):
    data = RAW[:1000] + b"\xff" + RAW[1000:]
    assert RAW[:1000].decode("utf-8")  # the bad byte does not split a character
    path = tmp_path / "data.txt"
    path.write_bytes(data)
    assert tok_cli.run(["encode", "--tokenizer", "gpt2", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: input {path}: ") and err.count("\n") == 1
    assert "invalid UTF-8 at byte offset 1000 (0xff)" in err and "--errors replace" in err

    assert tok_cli.run(["encode", "--tokenizer", "gpt2", "--errors", "replace", str(path)]) == 0
    ids = json.loads(capsys.readouterr().out)
    assert ids == oracles["gpt2"].encode_ordinary(data.decode("utf-8", errors="replace"))
    assert "\ufffd" in load_pretrained("gpt2").decode(ids)

    bytes_stdin(monkeypatch, data)
    assert tok_cli.run(["encode", "--tokenizer", "gpt2", "-"]) == 2
    assert "error: input stdin: " in (err := capsys.readouterr().err) and "offset 1000" in err
    with pytest.raises(SystemExit):
        tok_cli.run(["encode", "--errors", "ignore", str(path)])


def test_encode_truncated_character_at_the_end(tmp_path, capsys):
    path = tmp_path / "cut.txt"
    path.write_bytes("ab€".encode()[:-1])  # € is 3 bytes; the file ends after 2 of them
    assert tok_cli.run(["encode", str(path)]) == 2
    assert "byte offset 2 (0xe2): unexpected end of data" in capsys.readouterr().err


def test_show_reads_stdin_bytes(oracles, monkeypatch, capsys):
    bytes_stdin(monkeypatch, RAW)
    assert tok_cli.run(["show", "--tokenizer", "cl100k_base", "--no-color", "-"]) == 0
    out = capsys.readouterr().out
    ids = oracles["cl100k_base"].encode_ordinary(TEXT)
    assert f"ids: {json.dumps(ids)}" in out and f"{len(ids)} tokens, {len(RAW)} bytes" in out
    bytes_stdin(monkeypatch, b"ok \xc3(")
    assert tok_cli.run(["show", "-"]) == 2
    assert "byte offset 3 (0xc3): invalid continuation byte" in capsys.readouterr().err
    bytes_stdin(monkeypatch, b"ok \xc3(")
    assert tok_cli.run(["show", "--no-color", "--errors", "replace", "-"]) == 0
    ids = oracles["gpt2"].encode_ordinary("ok \ufffd(")
    assert f"ids: {json.dumps(ids)}" in capsys.readouterr().out


# ---------------------------------------------------------------------------------------------
# tokenizer decode


@pytest.mark.parametrize("name", NAMES)
def test_decode_writes_exactly_the_text_bytes(name, tmp_path, monkeypatch):
    ids = load_pretrained(name).encode(TEXT)
    (tmp_path / "ids.json").write_text(json.dumps(ids))
    out = bytes_stdout(monkeypatch)
    assert tok_cli.run(["decode", "--tokenizer", name, str(tmp_path / "ids.json")]) == 0
    sys.stdout.flush()
    assert out.getvalue() == RAW  # \r\n not doubled, BOM and NULs kept, no newline added


def test_decode_to_a_stdout_without_buffer(tmp_path, monkeypatch):
    ids = load_pretrained("gpt2").encode(TEXT)
    (tmp_path / "ids.json").write_text(json.dumps(ids))
    captured = io.StringIO(newline="")
    monkeypatch.setattr(sys, "stdout", captured)
    assert tok_cli.run(["decode", str(tmp_path / "ids.json")]) == 0
    assert captured.getvalue() == TEXT


def test_decode_and_encode_in_a_real_process(tmp_path):
    ids = load_pretrained("gpt2").encode(TEXT)
    proc = subprocess.run(
        [sys.executable, "-m", "myllm101", "tokenizer", "decode", "-"],
        input=json.dumps(ids).encode(), capture_output=True, cwd=ROOT, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == RAW
    proc = subprocess.run(
        [sys.executable, "-m", "myllm101", "tokenizer", "encode", "-"],
        input=RAW, capture_output=True, cwd=ROOT, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == ids


# ---------------------------------------------------------------------------------------------
# tokenizer train


@pytest.mark.parametrize("source", ["file", "stdin"])
def test_train_learns_from_the_exact_text(source, tmp_path, monkeypatch, capsys):
    raw = ("First Citizen:\r\nBefore we proceed,\r\nhear me.\r\n" * 40).encode()
    (tmp_path / "in.txt").write_bytes(raw)
    if source == "stdin":
        bytes_stdin(monkeypatch, raw)
    args = ["train", "--input", str(tmp_path / "in.txt") if source == "file" else "-",
            "--vocab-size", "280", "--out", str(tmp_path / "t")]  # fmt: skip
    assert tok_cli.run(args) == 0
    assert f"({len(raw)} bytes -> " in capsys.readouterr().out
    tok = load_tokenizer(tmp_path / "t")
    assert any(b"\r\n" in token for token in tok.mergeable_ranks)
    assert tok.decode(tok.encode(raw.decode())).encode() == raw


def test_train_invalid_utf8(tmp_path, capsys):
    (tmp_path / "in.txt").write_bytes(b"hello\r\n" * 10 + b"\x80 world\r\n" * 10)
    args = ["train", "--input", str(tmp_path / "in.txt"), "--vocab-size", "260",
            "--out", str(tmp_path / "t")]  # fmt: skip
    assert tok_cli.run(args) == 2
    assert "byte offset 70 (0x80): invalid start byte" in capsys.readouterr().err
    assert tok_cli.run([*args, "--errors", "replace"]) == 0
    assert "(180 bytes -> " in capsys.readouterr().out  # 160 bytes; each 0x80 -> U+FFFD (3)


# ---------------------------------------------------------------------------------------------
# Tokenizer.encode_file


def encode_file_ids(tok, path: Path, chunk_bytes: int, **kwargs) -> list[int]:
    out = path.with_suffix(".bin")
    tok.encode_file(path, out, chunk_bytes=chunk_bytes, show_progress=False, **kwargs)
    dtype = np.uint16 if tok.n_vocab <= 65536 else np.uint32
    return np.fromfile(out, dtype=dtype).tolist()


@pytest.mark.parametrize("name", [*NAMES, "o200k_base"])
def test_encode_file_with_tiny_chunks_keeps_crlf_and_cr(name, tmp_path):
    tok = load_pretrained(name)
    # many lone "\n" between non-space characters (the cut points) among \r\n and lone \r
    text = TEXT + "".join(f"w{i}\nv{i}\r\nu{i}\rz\n" for i in range(60)) + "\r\n/x\r\n"
    path = tmp_path / "in.txt"
    path.write_bytes(text.encode("utf-8"))
    expected = tok.encode(text)
    for chunk_bytes in (1, 2, 3, 5, 64):
        assert encode_file_ids(tok, path, chunk_bytes) == expected, chunk_bytes


def test_encode_file_all_crlf_is_exact(tmp_path):
    tok = load_pretrained("gpt2")
    text = "".join(f"line {i}\r\n" for i in range(200)) + "a\rb\r\rc\r"
    (tmp_path / "crlf.txt").write_bytes(text.encode())
    assert encode_file_ids(tok, tmp_path / "crlf.txt", 7) == tok.encode(text)


@pytest.mark.parametrize("name", [*NAMES, "o200k_base"])
def test_encode_file_random_line_ends_with_tiny_chunks(name, tmp_path):
    tok = load_pretrained(name)
    rng = random.Random(2)
    pieces = ["a", "b1", ".", "/", " ", "\n", "\r\n", "\r", "\n\n", "é", "\t", "'s", "\x00"]
    for _ in range(15):
        text = "".join(rng.choice(pieces) for _ in range(120))
        (tmp_path / "r.txt").write_bytes(text.encode())
        expected = tok.encode(text)
        for chunk_bytes in (1, 2, 3, 7):
            assert encode_file_ids(tok, tmp_path / "r.txt", chunk_bytes) == expected, repr(text)


def test_encode_file_scans_a_crlf_file_once(tmp_path, monkeypatch):
    from myllm101.fast import bpe

    scanned = []
    real = bpe._last_safe_cut
    monkeypatch.setattr(bpe, "_last_safe_cut", lambda text: scanned.append(len(text)) or real(text))
    text = "".join(f"line {i}\r\n" for i in range(3000))  # no safe cut anywhere
    (tmp_path / "crlf.txt").write_bytes(text.encode())
    tok = load_pretrained("gpt2")
    assert encode_file_ids(tok, tmp_path / "crlf.txt", 256) == tok.encode(text)
    assert len(scanned) > 100 and sum(scanned) < 2 * len(text)  # not rescanned chunk after chunk


def whole_file_offset(data: bytes) -> int:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as e:
        return e.start
    raise AssertionError("expected invalid UTF-8")


@pytest.mark.parametrize(
    "data",
    [
        b"ab\xc3\xa9c\xff",  # a bad byte after a 2-byte character
        "é€🎉".encode() + b"\xff",  # after 2-, 3- and 4-byte characters
        "ab€".encode()[:-1] + b"x",  # a 3-byte character cut short by an ASCII byte
        "ab🎉".encode()[:-1],  # a 4-byte character cut short by the end of the file
        b"\xed\xa0\x80",  # an encoded surrogate
    ],
)
def test_encode_file_offset_around_split_characters(data, tmp_path):
    tok = load_pretrained("gpt2")
    prefix = b"abc\nxyz\n" * 3  # cut points, so chunks are encoded as they come
    for pad in range(4):  # every alignment of the bad bytes against the chunk boundaries
        raw = prefix + b"p" * pad + data
        (tmp_path / "b.txt").write_bytes(raw)
        expected = whole_file_offset(raw)
        for chunk_bytes in (1, 2, 3, 4, 5, 7, 1 << 20):
            with pytest.raises(textio.InvalidUTF8Error) as info:
                encode_file_ids(tok, tmp_path / "b.txt", chunk_bytes)
            assert info.value.offset == expected, (pad, chunk_bytes)
            assert f"byte offset {expected} (0x{raw[expected]:02x})" in str(info.value)
            assert str(info.value).startswith(f"{tmp_path / 'b.txt'}: expected UTF-8 text, got")
        replaced = raw.decode("utf-8", errors="replace")
        assert encode_file_ids(tok, tmp_path / "b.txt", 3, errors="replace") == tok.encode(replaced)


def test_encode_file_offset_deep_in_a_big_file(tmp_path):
    tok = load_pretrained("cl100k_base")
    raw = RAW * 20
    bad = len(raw) - 1234
    while raw[bad] >= 0x80:  # land on a character boundary
        bad += 1
    data = raw[:bad] + b"\xfe" + raw[bad:]
    (tmp_path / "big.txt").write_bytes(data)
    for chunk_bytes in (1000, 4097):
        with pytest.raises(ValueError, match=rf"big.txt: .* byte offset {bad} \(0xfe\)"):
            encode_file_ids(tok, tmp_path / "big.txt", chunk_bytes)
    got = encode_file_ids(tok, tmp_path / "big.txt", 999, errors="replace")
    assert got == tok.encode(data.decode("utf-8", errors="replace"))


def test_encode_file_replace_matches_bytes_decode_on_random_bytes(tmp_path):
    tok = load_pretrained("gpt2")
    rng = random.Random(1)
    pieces = [b"a\n", b"b", b"\r\n", "é".encode(), "€".encode(), "🎉".encode(), b"\xff", b"\x80",
              b"\xe2\x82", b"\xf0\x9f", b"\xc3", b"\n"]  # fmt: skip
    for _ in range(20):
        data = b"".join(rng.choice(pieces) for _ in range(60))
        (tmp_path / "r.txt").write_bytes(data)
        expected = tok.encode(data.decode("utf-8", errors="replace"))
        for chunk_bytes in (1, 2, 5):
            got = encode_file_ids(tok, tmp_path / "r.txt", chunk_bytes, errors="replace")
            assert got == expected


def test_encode_file_errors_choice(tmp_path):
    (tmp_path / "a.txt").write_bytes(b"a")
    with pytest.raises(ValueError, match=r"errors: expected one of \['strict', 'replace'\]"):
        encode_file_ids(load_pretrained("gpt2"), tmp_path / "a.txt", 8, errors="ignore")


# ---------------------------------------------------------------------------------------------
# myllm101 embed (stdin lines)


def test_embed_stdin_lines_split_on_newline_only(monkeypatch):
    bytes_stdin(monkeypatch, "first\r\nsé\rcond\n\nthird\x00\r\r\nlast".encode())
    assert hub_cli.stdin_lines() == ["first", "sé\rcond", "", "third\x00\r", "last"]
    bytes_stdin(monkeypatch, b"one\n")
    assert hub_cli.stdin_lines() == ["one"]
    bytes_stdin(monkeypatch, b"")
    assert hub_cli.stdin_lines() == []
    monkeypatch.setattr(sys, "stdin", io.StringIO("a\r\nb\n"))  # captured text stdin
    assert hub_cli.stdin_lines() == ["a", "b"]


def test_embed_invalid_utf8_on_stdin(monkeypatch, capsys):
    from myllm101.hub import embed

    monkeypatch.setattr(embed, "embed", lambda texts, **kw: [[0.0] for _ in texts])
    bytes_stdin(monkeypatch, b"ok\nbad \xff\n")
    assert hub_cli.run(["embed"]) == 2
    assert "error: embed stdin: " in (err := capsys.readouterr().err)
    assert "byte offset 7 (0xff)" in err
    bytes_stdin(monkeypatch, b"ok\r\n\xc3\xa9\n")
    assert hub_cli.run(["embed"]) == 0
    assert json.loads(capsys.readouterr().out) == [[0.0], [0.0]]
