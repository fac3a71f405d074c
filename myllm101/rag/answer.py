"""Retrieve, assemble the prompt, generate: an answer from SmolLM2-135M-Instruct that cites [n].

    gen = Generator(dtype="auto")                       # SmolLM2 through our LLaMA + our BPE
    a = answer("Who killed Duncan?", Retriever(load_index("idx/")), gen, k=5)
    print(a.text)                                       # "... Macbeth [1] ..."
    for s in a.prompt.sources: print(s.n, s.chunk.doc, s.chunk.start, s.end)

Without a retriever (``retriever=None``) the same model answers closed-book: the eval's baseline.
Generation is greedy (temperature 0) by default, stopped at ``<|im_end|>`` (hub/smollm2.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from myllm101.rag.prompt import Prompt, build_prompt
from myllm101.rag.retrieve import DEFAULT_METHOD, Hit, Retriever


class Generator:
    """SmolLM2-135M-Instruct (loaded on first use, cached per dtype by hub/smollm2.py)."""

    def __init__(self, dtype: str = "auto"):
        from myllm101.device import choose_inference_dtype

        self.dtype = choose_inference_dtype(dtype).value
        self._loaded = None

    def _load(self):
        if self._loaded is None:
            from myllm101.hub.smollm2 import load_smollm2

            self._loaded = load_smollm2(self.dtype)
        return self._loaded

    @property
    def tokenizer(self):
        return self._load()[1]

    @property
    def context_length(self) -> int:
        return int(self._load()[0].cfg.block_size)

    def generate(self, prompt_text: str, max_new_tokens: int = 128, temperature: float = 0.0,
                 seed: int | None = None) -> str:  # fmt: skip
        """The model's continuation of ``prompt_text`` (already in ChatML), special tokens cut."""
        from myllm101.hub.smollm2 import generate_ids

        model, tok = self._load()
        ids = tok.encode(prompt_text)
        if len(ids) + max_new_tokens > self.context_length:
            raise ValueError(
                f"max_new_tokens: the prompt ({len(ids)} tokens) plus {max_new_tokens} new ones "
                f"exceed the model's context of {self.context_length}; lower --budget or "
                f"--max-new-tokens"
            )
        stop = (tok.eos_id,) if tok.eos_id is not None else ()
        out = generate_ids(model, ids, max_new_tokens, temperature, stop, seed)
        return tok.decode(out[len(ids) :], skip_special_tokens=True).strip()


@dataclass
class Answer:
    question: str
    text: str  # the generated answer ("" when generation was skipped)
    prompt: Prompt
    hits: list[Hit] = field(default_factory=list)  # everything retrieved (sources: prompt.sources)


def answer(
    question: str,
    retriever: Retriever | None,
    generator: Generator,
    k: int = 5,
    method: str = DEFAULT_METHOD,
    budget: int = 1024,
    max_new_tokens: int = 128,
    temperature: float = 0.0,
    seed: int | None = None,
) -> Answer:
    """Retrieve ``k`` chunks for ``question`` (none when ``retriever`` is None), fit them into a
    prompt of at most ``budget`` tokens, generate up to ``max_new_tokens``."""
    if (
        isinstance(max_new_tokens, bool)
        or not isinstance(max_new_tokens, int)
        or max_new_tokens < 0
    ):
        raise ValueError(f"max_new_tokens: expected an int >= 0, got {max_new_tokens!r}")
    if isinstance(budget, int) and budget + max_new_tokens > generator.context_length:
        raise ValueError(
            f"budget: expected budget + max_new_tokens <= the model's context "
            f"({generator.context_length}), got {budget} + {max_new_tokens}"
        )
    hits = retriever.search(question, k=k, method=method) if retriever is not None else []
    prompt = build_prompt(question, [h.chunk for h in hits], generator.tokenizer, budget=budget)
    text = generator.generate(prompt.text, max_new_tokens, temperature, seed)
    return Answer(question, text, prompt, hits)
