"""The RAG tab's link to myllm101/rag/, imported only when the app is started with --index.

    tab, why = open_rag("idx", cm)           # (None, the reason) when myllm101.rag is missing
    answer, sources = tab.ask("Who killed Duncan?", k=5, method="weighted")

rag/answer.py's ``answer`` retrieves ``k`` chunks of the index (``myllm101 rag index DOCS --out
IDX``), fits them into a prompt that numbers them [1], [2], ... and lets a generator answer. Its
own ``Generator`` is SmolLM2; here ``ModelGenerator`` puts the app's chat model behind the same
three members (tokenizer, context_length, generate), so the tab answers with the model the app
serves (a quantized SmolLM2 too) through our ``stream``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from myllm101.ui.chat import ChatModel, Sampling, stream_reply


class ModelGenerator:
    """rag/answer.py's generator interface over a ChatModel."""

    def __init__(self, cm: ChatModel):
        self.cm = cm

    @property
    def tokenizer(self) -> ChatModel:  # counts prompt tokens: ``encode`` with special tokens
        return self.cm

    @property
    def context_length(self) -> int:
        return self.cm.block_size

    def generate(self, prompt_text: str, max_new_tokens: int = 128, temperature: float = 0.0,
                 seed: int | None = None) -> str:  # fmt: skip
        """The model's reply to ``prompt_text`` (ChatML already), special tokens cut."""
        ids = self.cm.encode(prompt_text)
        if len(ids) + max_new_tokens > self.context_length:
            raise ValueError(
                f"max_new_tokens: the prompt ({len(ids)} tokens) plus {max_new_tokens} new ones "
                f"exceed the model's context of {self.context_length}"
            )
        sampling = Sampling(temperature, 1.0, max_new_tokens, seed or 0)
        text = ""
        for text in stream_reply(self.cm, ids, sampling):  # noqa: B007  (the last one is whole)
            pass
        return text.strip()


@dataclass
class RagTab:
    """What the RAG tab calls: ``ask(question, k, method) -> (answer, sources markdown)``."""

    index: Path
    retriever: object  # rag/retrieve.py Retriever
    generator: ModelGenerator
    max_new_tokens: int = 128

    def budget(self) -> int:
        """Prompt tokens: rag's default 1024, less where the model's context is shorter."""
        return min(1024, self.generator.context_length - self.max_new_tokens)

    def ask(self, question: str, k: float = 5, method: str = "weighted") -> tuple[str, str]:
        from myllm101.rag.answer import answer

        if not isinstance(question, str) or not question.strip():
            raise ValueError(f"question: expected some text, got {question!r}")
        a = answer(question, self.retriever, self.generator, k=int(k), method=method,
                   budget=self.budget(), max_new_tokens=self.max_new_tokens)  # fmt: skip
        scores = {h.chunk.id: h.score for h in a.hits}
        return a.text, sources_markdown(a.prompt.sources, scores, a.prompt.truncated)


def sources_markdown(sources: list, scores: dict | None = None, truncated: bool = False) -> str:
    """rag/prompt.py's numbered Sources as a Markdown list: [n], file, byte range, score and the
    start of the passage the prompt showed."""
    if not sources:
        return "_no sources (nothing retrieved, or nothing fitted the prompt)_"
    scores = scores or {}
    lines = []
    for s in sources:
        c = s.chunk
        score = f", score {scores[c.id]:.4f}" if c.id in scores else ""
        cut = " (cut to fit)" if truncated else ""
        text = " ".join(s.text.split())
        short = text[:240] + ("…" if len(text) > 240 else "")
        lines.append(f"{s.n}. **{c.doc}** (bytes {c.start}-{s.end}{score}){cut}: {short}")
    return "\n".join(lines)


def open_rag(index: str, cm: ChatModel, max_new_tokens: int = 128) -> tuple[RagTab | None, str]:
    """(the tab's handle, "") or (None, why the tab cannot answer). myllm101.rag is imported
    here, lazily; a missing or damaged index is an error (the command reports it)."""
    path = Path(index)
    if not path.is_dir():
        raise FileNotFoundError(f"--index {index}: expected an index directory, found none")
    try:
        from myllm101.rag.retrieve import Retriever
        from myllm101.rag.store import load_index
    except ImportError as e:
        return None, f"RAG is not available in this install (myllm101.rag: {e})."
    new = min(max_new_tokens, cm.block_size // 2)
    tab = RagTab(path, Retriever(load_index(path)), ModelGenerator(cm), new)
    if tab.budget() < 32:
        raise ValueError(f"--index: the model's context ({cm.block_size} tokens) leaves no room "
                         "for retrieved passages; expected a model with a longer context")  # fmt: skip
    return tab, ""
