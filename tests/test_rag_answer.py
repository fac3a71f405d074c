"""Prompt assembly (rag/prompt.py): numbered sources inside a token budget; answers (rag/answer.py)."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from myllm101.rag.chunk import Chunk
from myllm101.rag.prompt import CLOSED_BOOK, INSTRUCTION, build_prompt
from tests.weights import skip_without_smollm2


class WordTokenizer:
    """One token per whitespace-separated word: counts are easy to reason about."""

    def encode(self, text: str) -> list[int]:
        return [len(w) for w in text.split()]


def make_chunks(lengths: list[int]) -> list[Chunk]:
    out, pos = [], 0
    for i, n in enumerate(lengths):
        text = " ".join(f"w{i}x{j}" for j in range(n))
        out.append(Chunk(f"notes/a.md#{i}", "notes/a.md", pos, pos + len(text.encode()), text))
        pos += len(text.encode()) + 1
    return out


def source_numbers(text: str) -> list[int]:
    return [int(n) for n in re.findall(r"^\[(\d+)\] notes/a\.md \(bytes \d+-\d+\)$", text, re.M)]


@pytest.mark.parametrize("chat", [False, True])
@given(lengths=st.lists(st.integers(1, 60), min_size=1, max_size=8), extra=st.integers(0, 400))
def test_prompt_fits_the_budget_and_numbers_sources_in_rank_order(chat, lengths, extra):
    tok = WordTokenizer()
    chunks = make_chunks(lengths)
    base = build_prompt("Who is it?", [], tok, budget=10_000, chat=chat, instruction=INSTRUCTION)
    budget = base.n_tokens + extra
    p = build_prompt("Who is it?", chunks, tok, budget=budget, chat=chat)
    assert p.n_tokens == len(tok.encode(p.text)) <= budget
    assert source_numbers(p.text) == list(range(1, len(p.sources) + 1))
    assert [s.n for s in p.sources] == list(range(1, len(p.sources) + 1))
    used = len(p.sources)
    if p.truncated:  # only ever the best chunk, cut to a prefix that fits
        assert used == 1 and chunks[0].text.startswith(p.sources[0].text)
        assert len(p.sources[0].text) < len(chunks[0].text)
        assert p.sources[0].end < chunks[0].end
    else:
        assert [s.chunk for s in p.sources] == chunks[:used]
        assert all(s.text == s.chunk.text and s.end == s.chunk.end for s in p.sources)
        if used < len(chunks):  # maximal: the next chunk in rank order would not have fitted
            more = build_prompt("Who is it?", chunks[: used + 1], tok, budget=10**6, chat=chat)
            assert more.n_tokens > budget
    assert p.text.index("Question: Who is it?") > p.text.rfind("[")  # question after the sources
    assert INSTRUCTION in p.text and ("<|im_start|>user" in p.text) == chat


def test_prompt_truncates_a_too_long_first_chunk_and_closed_book_has_no_sources():
    tok = WordTokenizer()
    chunks = make_chunks([500, 3])
    p = build_prompt("Why?", chunks, tok, budget=200, chat=False)
    assert p.truncated and len(p.sources) == 1 and p.n_tokens <= 200
    assert p.n_tokens > 190  # the longest prefix that fits: within one word of the budget
    closed = build_prompt("Why?", [], tok, budget=200, chat=False)
    assert closed.sources == [] and CLOSED_BOOK in closed.text and "[1]" not in closed.text


def test_prompt_bad_input():
    tok = WordTokenizer()
    need = build_prompt("What is the capital?", [], tok, budget=100, chat=False,
                        instruction=INSTRUCTION).n_tokens  # fmt: skip
    with pytest.raises(ValueError, match=rf"budget: expected at least {need} tokens .* got 3"):
        build_prompt("What is the capital?", make_chunks([4]), tok, budget=3, chat=False)
    with pytest.raises(ValueError, match="budget: expected a positive int .* got 0"):
        build_prompt("What?", [], tok, budget=0)
    with pytest.raises(ValueError, match="question: expected a non-empty string, got ' '"):
        build_prompt(" ", [], tok)


@pytest.fixture(scope="module")
def generator():
    skip_without_smollm2()
    from myllm101.rag.answer import Generator

    return Generator("auto")


@pytest.mark.slow
def test_answer_generates_within_budget_with_sources(generator, tmp_path):
    from myllm101.rag.answer import answer
    from myllm101.rag.documents import Document
    from myllm101.rag.embedder import Embedder
    from myllm101.rag.retrieve import Retriever
    from myllm101.rag.store import build_index

    docs = [Document("zoo.md", "The zookeeper of the city zoo is named Oswaldo Prench.\n"),
            Document("sea.md", "Whales are large mammals that live in the ocean.\n")]  # fmt: skip
    index = build_index(docs, Embedder(dtype="fp32"))
    a = answer("Who is the zookeeper?", Retriever(index), generator, k=2, budget=300,
               max_new_tokens=8)  # fmt: skip
    assert isinstance(a.text, str)
    assert a.prompt.n_tokens <= 300 and a.prompt.sources[0].chunk.doc == "zoo.md"
    assert len(generator.tokenizer.encode(a.text)) <= 8 + 1  # decode/encode may split one token
    closed = answer("Who is the zookeeper?", None, generator, max_new_tokens=4)
    assert closed.prompt.sources == [] and closed.hits == []
    with pytest.raises(ValueError, match="budget: expected budget \\+ max_new_tokens <="):
        answer("Who?", None, generator, budget=generator.context_length, max_new_tokens=8)
