"""Our models -> Hugging Face directories that ``transformers``' ``from_pretrained`` loads.

    save_hf(model, "out/gpt-hf", tokenizer=tok)       # config.json, model.safetensors, tokenizer
    hf_config, hf_sd = to_hf_state_dict(model)        # the same, in memory

The reverse of hub/convert.py, with the same name maps (hub/names.py: ``gpt2_names``, ``llama_names``, ``bert_names``, ``BERT_MLM_HEAD``)
list every (HF name, our name, layout) of one model, the maps convert.py spells inline; an export
that leaves any weight of ours unnamed is an error, and the tests load every export back through
both transformers and convert.py:

- GPT -> ``GPT2LMHeadModel``: the names are GPT-2's already (``transformer.`` prefix added); our
  Linear weights (out, in) are transposed to GPT-2's Conv1D (in, out). A GPT without biases gets
  zero biases (GPT-2 always has them: the same function).
- LLaMA -> ``LlamaForCausalLM``: ``model.`` prefix added. Per-layer (pruned) shapes cannot be
  written: transformers' LLaMA has one size for every layer.
- BERT -> ``BertForMaskedLM`` (``task="mlm"``, default) or ``BertForSequenceClassification``
  (``task="cls"``): every layer renamed back (``attn.q_proj`` -> ``attention.self.query``, ...).
  Both heads and the pooler are written; the class that loads the directory takes what it has
  and ignores the rest (transformers logs the unused keys).

A tied weight (GPT's head, BERT's MLM decoder, a tied LLaMA head) is written once, as
transformers writes it: ``tie_word_embeddings`` ties it again on load.

Tokenizer (``save_hf_tokenizer``): our byte-level BPE as ``tokenizer.json`` (tokenizer/hf_format.py
``to_hf_tokenizer_json``, with the special tokens also in the vocab: HF ``tokenizers`` renumbers an
added token whose id its vocab lacks, e.g. SmolLM2's <|im_start|> = 1, past the vocab) and a
``tokenizer_config.json`` naming ``PreTrainedTokenizerFast``, so ``AutoTokenizer.from_pretrained``
gives our ids. No ``vocab.json`` + ``merges.txt``: GPT-2's slow tokenizer would split with
GPT-2's regex, not the pattern our run was trained with, and give other ids. A WordPiece tokenizer
(MiniLM's) is written as ``vocab.txt`` + ``BertTokenizer`` config. A GGUF model's tokenizer
(SmolLM2) is its BPE inside. A BERT trained here on our BPE: the tokenizer.json has no [CLS] /
[SEP] / [MASK] (data/mlm.py adds those ids after the vocabulary, outside the tokenizer).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from myllm101.hub.names import BERT_MLM_HEAD, bert_names, gpt2_names, llama_names

TASKS = ("mlm", "cls")  # BERT: which class config.json's "architectures" names


# ---------------------------------------------------------------------------------------------
# configs


def _plain_model(model: nn.Module) -> None:
    """Refuse what transformers' classes cannot hold: LoRA layers, quantized or fused modules."""
    if getattr(model, "quantization", None):
        raise ValueError(
            "model: a quantized model cannot be exported to the Hugging Face format (transformers "
            "has no loader for our int8/int4 layouts); export the float model it came from"
        )
    names = [n for n, _ in model.named_parameters()]
    if any(".lora_A" in n or ".lora_B" in n for n in names):
        raise ValueError(
            "model: expected a model without LoRA layers, got one with them; merge_lora(model) "
            "and finetune.adapted.plain_linears(model) first, or save the adapter (PEFT format)"
        )
    if any("qkv_proj" in n or "gate_up_proj" in n for n in names):
        raise ValueError("model: its projections are fused (fast.fuse); export the unfused model")


def hf_config(cfg, task: str = "mlm", tokenizer=None, labels: list[str] | None = None) -> dict:
    """Our config -> the transformers ``config.json`` dict of the matching HF class (``labels``:
    BERT's class names for id2label, default LABEL_0, LABEL_1, ...)."""
    kind = cfg.model_type
    specials = _special_ids(tokenizer)
    if kind == "gpt":
        d = {
            "architectures": ["GPT2LMHeadModel"], "model_type": "gpt2",
            "vocab_size": cfg.vocab_size, "n_positions": cfg.block_size, "n_embd": cfg.n_embd,
            "n_layer": cfg.n_layer, "n_head": cfg.n_head, "n_inner": None,
            "activation_function": "gelu_new", "layer_norm_epsilon": cfg.layer_norm_eps,
            "resid_pdrop": cfg.dropout, "embd_pdrop": cfg.dropout, "attn_pdrop": cfg.dropout,
            "tie_word_embeddings": cfg.tie_word_embeddings, "scale_attn_weights": True,
        }  # fmt: skip
    elif kind == "llama":
        if not cfg.is_uniform:
            raise ValueError(
                "model: expected the same head counts and MLP width in every layer, got a "
                "structurally pruned LLaMA (layer_n_head / layer_n_kv_head / "
                "layer_intermediate_size set); transformers' LlamaConfig has one size per model"
            )
        d = {
            "architectures": ["LlamaForCausalLM"], "model_type": "llama",
            "vocab_size": cfg.vocab_size, "hidden_size": cfg.n_embd,
            "intermediate_size": cfg.intermediate_size, "num_hidden_layers": cfg.n_layer,
            "num_attention_heads": cfg.n_head, "num_key_value_heads": cfg.n_kv_head,
            "head_dim": cfg.head_dim, "max_position_embeddings": cfg.block_size,
            "rms_norm_eps": cfg.rms_norm_eps, "rope_theta": cfg.rope_theta,
            "rope_parameters": {"rope_type": "default", "rope_theta": cfg.rope_theta},
            "hidden_act": "silu", "attention_bias": False, "mlp_bias": False,
            "attention_dropout": cfg.dropout, "tie_word_embeddings": cfg.tie_word_embeddings,
        }  # fmt: skip
    elif kind == "bert":
        if task not in TASKS:
            raise ValueError(f"task: expected one of {TASKS}, got {task!r}")
        arch = {"mlm": "BertForMaskedLM", "cls": "BertForSequenceClassification"}[task]
        names = [f"LABEL_{i}" for i in range(cfg.num_labels)]
        if labels is not None and len(labels) == cfg.num_labels:
            names = [str(x) for x in labels]
        d = {
            "architectures": [arch], "model_type": "bert", "vocab_size": cfg.vocab_size,
            "hidden_size": cfg.n_embd, "num_hidden_layers": cfg.n_layer,
            "num_attention_heads": cfg.n_head, "intermediate_size": cfg.intermediate_size,
            "hidden_act": "gelu", "max_position_embeddings": cfg.block_size,
            "type_vocab_size": cfg.type_vocab_size, "layer_norm_eps": cfg.layer_norm_eps,
            "hidden_dropout_prob": cfg.dropout, "attention_probs_dropout_prob": cfg.dropout,
            "position_embedding_type": "absolute", "pad_token_id": cfg.pad_token_id,
            "num_labels": cfg.num_labels, "tie_word_embeddings": True,
            "id2label": dict(enumerate(names)),
            "label2id": {n: i for i, n in enumerate(names)},
        }  # fmt: skip
    else:
        raise ValueError(
            f"model_type: expected one of ['bert', 'gpt', 'llama'] for a Hugging Face export, "
            f"got {kind!r}"
        )
    if kind != "bert":  # None, not transformers' defaults (GPT-2's 50256, LLaMA's 1 and 2)
        d.update(
            bos_token_id=specials.get("bos_token_id"), eos_token_id=specials.get("eos_token_id")
        )
    d["torch_dtype"] = "float32"
    return d


def _special_ids(tokenizer) -> dict:
    """bos/eos ids for config.json: GPT-2's <|endoftext|>, a GGUF tokenizer's own, else none."""
    if tokenizer is None:
        return {}
    bos, eos = getattr(tokenizer, "bos_id", None), getattr(tokenizer, "eos_id", None)
    bpe = getattr(tokenizer, "bpe", tokenizer)
    end = getattr(bpe, "special_tokens", {}).get("<|endoftext|>")
    out = {}
    if bos is not None or end is not None:
        out["bos_token_id"] = bos if bos is not None else end
    if eos is not None or end is not None:
        out["eos_token_id"] = eos if eos is not None else end
    return out


# ---------------------------------------------------------------------------------------------
# weights


def to_hf_state_dict(model: nn.Module, task: str = "mlm", tokenizer=None):
    """-> (HF config dict, HF state_dict of contiguous float CPU tensors), ``model`` untouched."""
    _plain_model(model)
    cfg = model.cfg
    config = hf_config(cfg, task, tokenizer, getattr(model, "labels", None))
    ours = {k: v.detach().to("cpu") for k, v in model.state_dict().items()}
    used: set[str] = set()

    def get(name: str) -> torch.Tensor:
        used.add(name)
        return ours[name]

    out: dict[str, torch.Tensor] = {}
    kind = cfg.model_type
    if kind == "gpt":
        for hf, name, how in gpt2_names(cfg.n_layer):
            if name not in ours and name.endswith(".bias"):  # bias=False: GPT-2 needs zeros
                t = torch.zeros(ours[name.removesuffix("bias") + "weight"].shape[0])  # (out,)
            else:
                t = get(name)
            out[f"transformer.{hf}"] = t.t() if how == "conv1d" else t
        if cfg.tie_word_embeddings:
            used.add("lm_head.weight")
        else:
            out["lm_head.weight"] = get("lm_head.weight")
    elif kind == "llama":
        for hf, name, _ in llama_names(cfg.n_layer):
            out[f"model.{hf}"] = get(name)
        if cfg.tie_word_embeddings:
            used.add("lm_head.weight")
        else:
            out["lm_head.weight"] = get("lm_head.weight")
    else:
        for hf, name, _ in bert_names(cfg.n_layer):
            out[f"bert.{hf}"] = get(name)
        for hf, name in BERT_MLM_HEAD.items():
            out[hf] = get(name)
        used.add("mlm_head.decoder.weight")  # tied to the word embeddings
        out["classifier.weight"], out["classifier.bias"] = (
            get("classifier.weight"),
            get("classifier.bias"),
        )
    left = sorted(set(ours) - used)
    if left:  # a name map that misses a weight would silently drop it: never
        raise ValueError(f"model: weights with no Hugging Face name: {left[:8]}")
    return config, {k: v.float().contiguous().clone() for k, v in out.items()}


# ---------------------------------------------------------------------------------------------
# tokenizer and directory


def save_hf_tokenizer(tokenizer, directory: str | Path, model_max_length: int | None = None,
                      vocab_file: str | Path | None = None) -> list[Path]:  # fmt: skip
    """Write ``tokenizer`` so transformers' ``AutoTokenizer.from_pretrained(directory)`` loads it:
    our BPE (or a GGUF tokenizer's BPE) -> tokenizer.json; a WordPiece one -> vocab.txt (copied
    from ``vocab_file``). Returns the files written."""
    from myllm101.fast.bpe import Tokenizer
    from myllm101.tokenizer.formats import write_atomic
    from myllm101.tokenizer.hf_format import to_hf_tokenizer_json

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    bpe = getattr(tokenizer, "bpe", tokenizer)
    config: dict = {
        "model_max_length": model_max_length or int(1e30),
        "clean_up_tokenization_spaces": False,
    }
    if isinstance(bpe, Tokenizer) or hasattr(bpe, "mergeable_ranks"):
        path = directory / "tokenizer.json"
        d = to_hf_tokenizer_json(bpe)  # its vocab holds the special tokens too
        write_atomic(path, json.dumps(d, ensure_ascii=False))
        config["tokenizer_class"] = "PreTrainedTokenizerFast"
        specials = _special_ids(tokenizer)
        names = {i: s for s, i in bpe.special_tokens.items()}
        for key in ("bos", "eos"):
            if specials.get(f"{key}_token_id") in names:
                config[f"{key}_token"] = names[specials[f"{key}_token_id"]]
        written = [path]
    elif hasattr(tokenizer, "vocab") and vocab_file is not None:
        import shutil

        shutil.copyfile(vocab_file, directory / "vocab.txt")
        config.update(tokenizer_class="BertTokenizer",
                      do_lower_case=bool(getattr(tokenizer, "do_lower_case", True)),
                      unk_token="[UNK]", sep_token="[SEP]", pad_token="[PAD]",
                      cls_token="[CLS]", mask_token="[MASK]")  # fmt: skip
        written = [directory / "vocab.txt"]
    else:
        raise ValueError(
            f"tokenizer: expected our byte-level BPE Tokenizer, a GGUF tokenizer or a WordPiece "
            f"tokenizer with its vocab.txt, got {type(tokenizer).__name__}"
        )
    cpath = directory / "tokenizer_config.json"
    cpath.write_text(json.dumps(config, indent=2) + "\n")
    return [*written, cpath]


def save_hf(model: nn.Module, directory: str | Path, tokenizer=None, task: str = "mlm",
            vocab_file: str | Path | None = None) -> Path:  # fmt: skip
    """``directory`` (created; its config.json / model.safetensors / tokenizer files replaced) as
    transformers writes it: config.json, model.safetensors, and the tokenizer when given."""
    from safetensors.torch import save_file

    config, sd = to_hf_state_dict(model, task, tokenizer)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    save_file(sd, str(directory / "model.safetensors"), metadata={"format": "pt"})
    (directory / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    if tokenizer is not None:
        save_hf_tokenizer(tokenizer, directory, model.cfg.block_size, vocab_file)
    return directory
