"""Hugging Face weight names <-> ours, written once for both directions: hub/convert.py imports
with them (HF -> ours, each tensor's shape checked), hub/export.py exports with them.

Each list holds (HF name without the model prefix, our name, how): "linear" = the same layout,
"conv1d" = GPT-2's Conv1D stores (in, out) where our Linear stores (out, in).
"""

from __future__ import annotations


def gpt2_names(n_layer: int) -> list[tuple[str, str, str]]:
    """GPT-2 <-> our GPT: every weight, HF name (without ``transformer.``) first."""
    out = [("wte.weight", "wte.weight", "linear"), ("wpe.weight", "wpe.weight", "linear")]
    for i in range(n_layer):
        h = f"h.{i}"
        for norm in ("ln_1", "ln_2"):
            out += [(f"{h}.{norm}.{p}", f"{h}.{norm}.{p}", "linear") for p in ("weight", "bias")]
        for lin in ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"):
            out += [(f"{h}.{lin}.weight", f"{h}.{lin}.weight", "conv1d"),
                    (f"{h}.{lin}.bias", f"{h}.{lin}.bias", "linear")]  # fmt: skip
    out += [("ln_f.weight", "ln_f.weight", "linear"), ("ln_f.bias", "ln_f.bias", "linear")]
    return out


LLAMA_LAYER = ("input_layernorm", "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
               "self_attn.o_proj", "post_attention_layernorm", "mlp.gate_proj", "mlp.up_proj",
               "mlp.down_proj")  # fmt: skip


def llama_names(n_layer: int) -> list[tuple[str, str, str]]:
    """LLaMA <-> ours: the same names, HF's without its ``model.`` prefix (head excluded)."""
    out = [("embed_tokens.weight", "embed_tokens.weight", "linear")]
    for i in range(n_layer):
        out += [(f"layers.{i}.{m}.weight",) * 2 + ("linear",) for m in LLAMA_LAYER]
    return out + [("norm.weight", "norm.weight", "linear")]


# BERT: HF module -> ours, per layer and in the embeddings (each has .weight and .bias)
BERT_LAYER = {
    "attention.self.query": "attn.q_proj",
    "attention.self.key": "attn.k_proj",
    "attention.self.value": "attn.v_proj",
    "attention.output.dense": "attn.o_proj",
    "attention.output.LayerNorm": "attn_norm",
    "intermediate.dense": "mlp.fc_in",
    "output.dense": "mlp.fc_out",
    "output.LayerNorm": "mlp_norm",
}
BERT_MLM_HEAD = {  # HF (full name, no bert. prefix) -> ours; the decoder weight is tied
    "cls.predictions.transform.dense.weight": "mlm_head.dense.weight",
    "cls.predictions.transform.dense.bias": "mlm_head.dense.bias",
    "cls.predictions.transform.LayerNorm.weight": "mlm_head.layer_norm.weight",
    "cls.predictions.transform.LayerNorm.bias": "mlm_head.layer_norm.bias",
    "cls.predictions.bias": "mlm_head.decoder.bias",
}


def bert_names(n_layer: int) -> list[tuple[str, str, str]]:
    """BERT encoder + pooler <-> ours, HF name without the ``bert.`` prefix first."""
    e = "embeddings"
    out = [(f"{e}.{n}.weight", f"{e}.{n}.weight", "linear")
           for n in ("word_embeddings", "position_embeddings", "token_type_embeddings")]  # fmt: skip
    out += [(f"{e}.LayerNorm.{p}", f"{e}.layer_norm.{p}", "linear") for p in ("weight", "bias")]
    for i in range(n_layer):
        for hf, ours in BERT_LAYER.items():
            out += [(f"encoder.layer.{i}.{hf}.{p}", f"layers.{i}.{ours}.{p}", "linear")
                    for p in ("weight", "bias")]  # fmt: skip
    out += [(f"pooler.dense.{p}", f"pooler.{p}", "linear") for p in ("weight", "bias")]
    return out
