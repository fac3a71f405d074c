"""The generator's prompt: numbered sources, an instruction to answer from them and cite [n], the
question, all inside a token budget.

    p = build_prompt("Who killed Duncan?", [hit.chunk for hit in hits], tokenizer, budget=1024)
    p.text      # ChatML: system turn, then the user turn below, then "<|im_start|>assistant\\n"
    p.sources   # the chunks that fitted, [1] first
    p.n_tokens  # len(tokenizer.encode(p.text)) <= budget

The user turn:

    Answer the question using only the numbered sources below. ...

    [1] plays/macbeth.txt (bytes 1200-2034)
    <the chunk's text>

    [2] ...

    Question: Who killed Duncan?

Sources go in rank order while the whole prompt fits ``budget`` tokens of the generator's own
tokenizer; the first source that does not fit ends the list (a lower-ranked short chunk is not
slipped in after it, so [n] always follows the retriever's order). When not even the first source
fits whole, it is cut at a character boundary to the longest prefix that fits (``truncated``), so
the model always sees some context. A budget too small for the instruction and question alone
is a ValueError saying how many tokens they need.
"""

from __future__ import annotations

from dataclasses import dataclass, field

INSTRUCTION = (
    "Answer the question using only the numbered sources below. Cite the sources you use as [n], "
    "for example [1]. If the sources do not contain the answer, say that you do not know."
)
CLOSED_BOOK = "Answer the question briefly."


@dataclass
class Source:
    """One numbered source as the prompt shows it (``text`` may be a prefix of the chunk's)."""

    n: int
    chunk: object  # rag/chunk.py Chunk
    text: str

    @property
    def end(self) -> int:
        """Byte offset (in the chunk's file) where the shown text ends."""
        return self.chunk.start + len(self.text.encode("utf-8"))


@dataclass
class Prompt:
    text: str
    n_tokens: int
    sources: list[Source] = field(default_factory=list)
    truncated: bool = False  # the only source was cut to fit


def format_source(n: int, chunk, text: str | None = None) -> str:
    """ "[n] path (bytes start-end)" and the text on the next lines."""
    text = chunk.text if text is None else text
    end = chunk.start + len(text.encode("utf-8"))
    return f"[{n}] {chunk.doc} (bytes {chunk.start}-{end})\n{text.strip()}"


def user_message(question: str, sources: list[tuple[object, str]], instruction: str) -> str:
    """The user turn: instruction, numbered sources (when any), question."""
    parts = [instruction]
    if sources:
        parts.append("\n\n".join(format_source(i + 1, c, t) for i, (c, t) in enumerate(sources)))
    parts.append(f"Question: {question.strip()}")
    return "\n\n".join(parts)


def render(question: str, sources: list[tuple[object, str]], instruction: str, chat: bool) -> str:
    """The generator's whole input; ``chat``: as SmolLM2's ChatML user turn (hub/smollm2.py)."""
    content = user_message(question, sources, instruction)
    if not chat:
        return content + "\n\nAnswer:"
    from myllm101.hub.smollm2 import chat_prompt

    return chat_prompt([{"role": "user", "content": content}])


def build_prompt(
    question: str,
    chunks: list,
    tokenizer,
    budget: int = 1024,
    instruction: str | None = None,
    chat: bool = True,
) -> Prompt:
    """The prompt for ``question`` with as many of ``chunks`` (best first) as fit in ``budget``
    tokens (``len(tokenizer.encode(text))``). No chunks: a closed-book prompt (no sources)."""
    if not isinstance(question, str) or not question.strip():
        raise ValueError(f"question: expected a non-empty string, got {question!r}")
    if isinstance(budget, bool) or not isinstance(budget, int) or budget < 1:
        raise ValueError(f"budget: expected a positive int (tokens), got {budget!r}")
    if instruction is None:
        instruction = INSTRUCTION if chunks else CLOSED_BOOK

    def count(sources) -> tuple[str, int]:
        text = render(question, sources, instruction, chat)
        return text, len(tokenizer.encode(text))

    text, n = count([])
    if n > budget:
        raise ValueError(
            f"budget: expected at least {n} tokens (the instruction and the question alone), "
            f"got {budget}"
        )
    chosen: list[tuple[object, str]] = []
    truncated = False
    for chunk in chunks:
        t, m = count([*chosen, (chunk, chunk.text)])
        if m <= budget:
            chosen.append((chunk, chunk.text))
            text, n = t, m
            continue
        if not chosen:  # the best chunk alone is too long: its longest prefix that fits
            lo, hi = 0, len(chunk.text)  # the prefix of lo characters fits, of hi does not
            while hi - lo > 1:
                mid = (lo + hi) // 2
                if count([(chunk, chunk.text[:mid])])[1] <= budget:
                    lo = mid
                else:
                    hi = mid
            if chunk.text[:lo].strip():
                chosen.append((chunk, chunk.text[:lo]))
                text, n = count(chosen)
                truncated = True
        break
    sources = [Source(i + 1, c, t) for i, (c, t) in enumerate(chosen)]
    return Prompt(text, n, sources, truncated)
