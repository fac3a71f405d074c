"""``pipeline(task, model=...)``: text in, answers out, for the tasks our models do.

    gen = pipeline("text-generation", model="smollm2")
    gen("The capital of France is", max_new_tokens=8)    # [{"generated_text": "The capital ..."}]
    pipeline("feature-extraction", model="minilm", pooling="mean")("a sentence")  # (384,) array
    pipeline("fill-mask", model="runs/bert")("To be or not to [MASK].")
    pipeline("text-classification", model="runs/genre")("O Romeo, Romeo!")
    pipeline("rag", index="idx/")("Who killed Duncan?")  # myllm101/rag: retrieve, then answer

``model``: a shipped name or a directory (api/loading.py), or one of our models (then pass
``tokenizer``). One input gives one result, a list of inputs a list of results, in order.

    text-generation      causal LM: {"generated_text"} (prompt + continuation unless
                         return_full_text=False); greedy at temperature 0, stops at the
                         tokenizer's end token (<|endoftext|>, a GGUF's eos)
    fill-mask            BERT with an MLM head: the top_k fillers of each [MASK]: {"score",
                         "token", "token_str", "sequence"} (a list per mask when there are more)
    feature-extraction   BERT: the last hidden states (T, C) as a NumPy array; pooling="mean"
                         (+ normalize=True): one (C,) vector, what sentence-transformers computes
    text-classification  BERT's classifier: {"label", "score"} (top_k=None: every label)
    rag                  myllm101.rag (loaded only then): {"answer", "sources"}
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from myllm101.fast.timings import Timings

TASKS = ("text-generation", "fill-mask", "feature-extraction", "text-classification", "rag")
DEFAULT_MODEL = {"text-generation": "smollm2", "feature-extraction": "minilm"}
REGISTRY_TASK = {"text-generation": "causal-lm", "fill-mask": "masked-lm",
                 "feature-extraction": "base", "text-classification": "sequence-classification"}  # fmt: skip
MASK = "[MASK]"


def _bert_ids(tokenizer, text: str, max_len: int) -> list[int]:
    """[CLS] text [SEP] ids; "[MASK]" in the text is the mask id. WordPiece does it itself; a BPE
    tokenizer (a BERT trained here) gets data/mlm.py's specials after its vocabulary."""
    if hasattr(tokenizer, "mask_id"):
        ids = tokenizer.encode(text)["input_ids"]
    else:
        from myllm101.data.mlm import bert_specials

        sp = bert_specials(tokenizer.n_vocab)
        ids = [sp.cls]
        for i, piece in enumerate(text.split(MASK)):
            if i:
                ids.append(sp.mask)
            ids += tokenizer.encode(piece) if piece else []
        ids.append(sp.sep)
    if len(ids) > max_len:
        raise ValueError(
            f"text: expected at most {max_len} tokens (the model's block_size), got {len(ids)}"
        )
    return ids


def _mask_id(tokenizer) -> int:
    if hasattr(tokenizer, "mask_id"):
        return tokenizer.mask_id
    from myllm101.data.mlm import bert_specials

    return bert_specials(tokenizer.n_vocab).mask


def _decode_one(tokenizer, i: int) -> str:
    if hasattr(tokenizer, "inv_vocab"):
        return tokenizer.inv_vocab.get(i, "[UNK]")
    return tokenizer.decode([i])


class Pipeline:
    """``pipe(x)`` for one input, ``pipe([x, y])`` for a list (results in order)."""

    task = ""

    def __init__(self, model: nn.Module, tokenizer, labels: list[str] | None = None):
        if tokenizer is None:
            raise ValueError(
                f"tokenizer: expected a tokenizer for {self.task!r} (the model directory has "
                f"none: pass tokenizer=...), got None"
            )
        self.model, self.tokenizer, self.labels = model.eval(), tokenizer, labels

    def __call__(self, inputs, **kwargs):
        if isinstance(inputs, str):
            return self.run_one(inputs, **kwargs)
        if isinstance(inputs, (list, tuple)) and all(isinstance(x, str) for x in inputs):
            return [self.run_one(x, **kwargs) for x in inputs]
        raise TypeError(f"inputs: expected a str or a list of str, got {type(inputs).__name__}")

    def run_one(self, text: str, **kwargs):
        raise NotImplementedError

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device


class TextGenerationPipeline(Pipeline):
    task = "text-generation"

    def _stop(self) -> tuple[int, ...]:
        eos = getattr(self.tokenizer, "eos_id", None)
        if eos is not None:
            return (eos,)
        end = getattr(self.tokenizer, "special_tokens", {}).get("<|endoftext|>")
        return () if end is None else (end,)

    @torch.inference_mode()
    def run_one(self, text: str, max_new_tokens: int = 32, temperature: float = 0.0,
                top_k: int | None = None, top_p: float | None = None, seed: int | None = None,
                chat: bool = False, return_full_text: bool = True,
                compile_step: bool = False,
                timings: Timings | None = None) -> list[dict]:  # fmt: skip
        from myllm101.fast.generate import generate

        if chat:
            from myllm101.hub.smollm2 import chat_prompt

            text = chat_prompt([{"role": "user", "content": text}])
        ids = self.tokenizer.encode(text)
        if not ids:
            raise ValueError("text: expected a prompt of at least one token, got an empty one")
        out = generate(self.model, ids, max_new_tokens, temperature=temperature, top_k=top_k,
                       top_p=top_p, stop_tokens=self._stop(), seed=seed,
                       compile_step=compile_step, timings=timings)  # fmt: skip
        new = out[len(ids) :]
        if new and new[-1] in self._stop():
            new = new[:-1]
        skip = {"skip_special_tokens": True} if hasattr(self.tokenizer, "bpe") else {}
        continuation = self.tokenizer.decode(new, **skip)
        return [{"generated_text": (text + continuation) if return_full_text else continuation}]


class FillMaskPipeline(Pipeline):
    task = "fill-mask"

    @torch.inference_mode()
    def run_one(self, text: str, top_k: int = 5):
        if MASK not in text:
            raise ValueError(f"text: expected at least one {MASK} token, got {text!r}")
        ids = _bert_ids(self.tokenizer, text, self.model.cfg.block_size)
        logits = self.model(torch.tensor([ids], device=self.device), head="mlm").logits[0]
        mask_id = _mask_id(self.tokenizer)
        where = [i for i, t in enumerate(ids) if t == mask_id]
        per_mask = []
        for pos in where:
            probs = torch.softmax(logits[pos].float(), -1)
            scores, tokens = probs.topk(min(top_k, probs.numel()))
            rows = []
            for s, t in zip(scores.tolist(), tokens.tolist()):
                filled = list(ids)
                filled[pos] = t
                rows.append({"score": s, "token": t, "token_str": _decode_one(self.tokenizer, t),
                             "sequence": self._decode(filled)})  # fmt: skip
            per_mask.append(rows)
        return per_mask[0] if len(per_mask) == 1 else per_mask

    def _decode(self, ids: list[int]) -> str:
        if hasattr(self.tokenizer, "decode"):
            body = ids[1:-1]  # without [CLS] / [SEP]
            if hasattr(self.tokenizer, "mask_id"):
                return self.tokenizer.decode(body)
            n = self.tokenizer.n_vocab
            return self.tokenizer.decode([i for i in body if i < n])
        return " ".join(_decode_one(self.tokenizer, i) for i in ids[1:-1])


class FeatureExtractionPipeline(Pipeline):
    task = "feature-extraction"

    @torch.inference_mode()
    def run_one(self, text: str, pooling: str = "none", normalize: bool = False) -> np.ndarray:
        if pooling not in ("none", "mean", "cls"):
            raise ValueError(f"pooling: expected 'none', 'mean' or 'cls', got {pooling!r}")
        if not hasattr(self.model, "encode"):
            raise ValueError(
                f"model: expected an encoder with hidden states (BERT), got "
                f"{type(self.model).__name__}: feature-extraction needs encode()"
            )
        ids = _bert_ids(self.tokenizer, text, self.model.cfg.block_size)
        hidden = self.model.encode(torch.tensor([ids], device=self.device))[0].float()  # (T, C)
        if pooling == "mean":
            hidden = hidden.mean(0)  # every position is a real token (no padding here)
        elif pooling == "cls":
            hidden = hidden[0]
        if normalize:
            hidden = torch.nn.functional.normalize(hidden, dim=-1)
        return hidden.cpu().numpy()


class TextClassificationPipeline(Pipeline):
    task = "text-classification"

    @torch.inference_mode()
    def run_one(self, text: str, top_k: int | None = 1):
        ids = _bert_ids(self.tokenizer, text, self.model.cfg.block_size)
        logits = self.model(torch.tensor([ids], device=self.device), head="cls").logits[0]
        probs = torch.softmax(logits.float(), -1).tolist()
        n = len(probs)
        labels = (
            self.labels
            if self.labels and len(self.labels) == n
            else [f"LABEL_{i}" for i in range(n)]
        )
        rows = sorted(({"label": labels[i], "score": p} for i, p in enumerate(probs)),
                      key=lambda r: -r["score"])  # fmt: skip
        if top_k == 1:
            return rows[0]
        return rows if top_k is None else rows[:top_k]


class RagPipeline:
    """myllm101/rag: retrieve from ``index`` (a saved index directory), answer with SmolLM2."""

    task = "rag"

    def __init__(self, index: str | Path, dtype: str = "auto", **settings):
        try:
            from myllm101.rag.answer import Generator
            from myllm101.rag.retrieve import Retriever
            from myllm101.rag.store import load_index
        except ImportError as e:  # the rag package is optional and still growing
            raise ValueError(
                f"pipeline('rag'): expected the myllm101.rag package (retrieval + answers), "
                f"could not import it ({e})"
            ) from None
        self.retriever = Retriever(load_index(index))
        self.generator = Generator(dtype)
        self.settings = settings

    def __call__(self, question, **kwargs):
        if isinstance(question, (list, tuple)):
            return [self(q, **kwargs) for q in question]
        from myllm101.rag.answer import answer

        a = answer(question, self.retriever, self.generator, **{**self.settings, **kwargs})
        sources = [{"n": s.n, "doc": s.chunk.doc} for s in getattr(a.prompt, "sources", [])]
        return {"answer": a.text, "sources": sources}


CLASSES = {"text-generation": TextGenerationPipeline, "fill-mask": FillMaskPipeline,
           "feature-extraction": FeatureExtractionPipeline,
           "text-classification": TextClassificationPipeline}  # fmt: skip


def pipeline(task: str, model: str | Path | nn.Module | None = None, tokenizer=None,
             device: str | torch.device = "cpu", dtype: str | None = None,
             **kwargs) -> Pipeline | RagPipeline:  # fmt: skip
    """A pipeline for ``task`` (module docstring). ``dtype``: "fp32" | "bf16" | "auto" | None (as
    stored). rag: ``pipeline("rag", index=DIR, dtype="auto", k=5, ...)``."""
    from myllm101.api import loading
    from myllm101.api.registry import model_entry

    if task not in TASKS:
        raise ValueError(f"task: expected one of {TASKS}, got {task!r}")
    if task == "rag":
        if "index" not in kwargs:
            raise ValueError(
                "index: expected the directory of a RAG index (myllm101 rag index), got none"
            )
        return RagPipeline(kwargs.pop("index"), dtype or "auto", **kwargs)
    if kwargs:
        raise TypeError(f"pipeline({task!r}): unexpected arguments {sorted(kwargs)}")
    model = DEFAULT_MODEL.get(task) if model is None else model
    if model is None:
        raise ValueError(f"model: expected a model name or directory for {task!r}, got None")
    labels = None
    if isinstance(model, nn.Module):  # used as it is (the pipelines pick BERT's head themselves)
        if not hasattr(model, "cfg"):
            raise TypeError(
                f"model: expected one of our models (with .cfg), got {type(model).__name__}"
            )
        model_entry(model.cfg.model_type, REGISTRY_TASK[task])  # a clear error for a wrong task
        labels = getattr(model, "labels", None)
    else:
        loaded = loading.load(model, REGISTRY_TASK[task])
        model, labels = loaded.model, loaded.labels
        tokenizer = tokenizer if tokenizer is not None else loaded.tokenizer
    return CLASSES[task](loading.to_device(model, device, dtype), tokenizer, labels)
