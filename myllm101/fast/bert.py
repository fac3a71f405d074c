"""BERT (Devlin et al., 2019) in PyTorch, built from the fast layers.

    x = LN(word(ids) + position(0..T-1) + token_type(type_ids))      # (B, T, C)
    for each layer:  x = attn_norm(x + attn(x))          # bidirectional, padding keys masked (SDPA)
                     x = mlp_norm(x + fc_out(gelu(fc_in(x))))          # post-LN
    head "mlm": logits = decoder(LN(gelu(dense(x))))     # (B, T, V), decoder tied to word emb.
    head "cls": logits = classifier(tanh(pooler(x[:, 0])))             # (B, num_labels)

``state_dict`` names are listed in reference/bert.py. Both heads always exist; ``head=`` picks the
one a forward pass uses (the other's parameters get no gradient: ``.grad`` stays None).
"""

from __future__ import annotations

import torch
from torch import nn

from myllm101.checks import expect_int, expect_shape
from myllm101.config import BertConfig
from myllm101.fast.activations import gelu
from myllm101.fast.attention import MultiHeadAttention
from myllm101.fast.blocks import (
    ModelOutput,
    check_model_inputs,
    init_gpt2_,
    residual,
    run_blocks,
    token_loss,
)
from myllm101.fast.dropout import Dropout
from myllm101.fast.embedding import Embedding
from myllm101.fast.layernorm import LayerNorm
from myllm101.fast.linear import Linear

HEADS = ("mlm", "cls")


class BertEmbeddings(nn.Module):
    def __init__(self, cfg: BertConfig):
        super().__init__()
        C = cfg.n_embd
        self.word_embeddings = Embedding(cfg.vocab_size, C)
        self.position_embeddings = Embedding(cfg.block_size, C)
        self.token_type_embeddings = Embedding(cfg.type_vocab_size, C)
        self.layer_norm = LayerNorm(C, eps=cfg.layer_norm_eps)

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor) -> torch.Tensor:
        pos = torch.arange(input_ids.shape[1], device=input_ids.device)
        x = residual(self.word_embeddings(input_ids)) + residual(self.position_embeddings(pos))
        return self.layer_norm(
            x + residual(self.token_type_embeddings(token_type_ids))
        )  # (B, T, C)


class BertMLP(nn.Module):
    def __init__(self, cfg: BertConfig):
        super().__init__()
        self.fc_in = Linear(cfg.n_embd, cfg.intermediate_size)
        self.fc_out = Linear(cfg.intermediate_size, cfg.n_embd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc_out(gelu(self.fc_in(x)))  # exact (erf) GELU, as in BERT


class BertLayer(nn.Module):
    """Post-LN encoder layer: norm(x + attn(x)), then norm(x + mlp(x))."""

    def __init__(self, cfg: BertConfig):
        super().__init__()
        C = cfg.n_embd
        self.attn = MultiHeadAttention(C, cfg.n_head, bias=True, max_seq_len=cfg.block_size)
        self.attn_norm = LayerNorm(C, eps=cfg.layer_norm_eps)
        self.mlp = BertMLP(cfg)
        self.mlp_norm = LayerNorm(C, eps=cfg.layer_norm_eps)
        self.dropout = Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, key_padding_mask: torch.Tensor | None) -> torch.Tensor:
        a = self.attn(x, key_padding_mask=key_padding_mask, causal=False)
        x = self.attn_norm(x + self.dropout(a))
        return self.mlp_norm(x + self.dropout(self.mlp(x)))


class BertMLMHead(nn.Module):
    """Transform (dense + gelu + LayerNorm), then the decoder back to vocabulary logits."""

    def __init__(self, cfg: BertConfig):
        super().__init__()
        self.dense = Linear(cfg.n_embd, cfg.n_embd)
        self.layer_norm = LayerNorm(cfg.n_embd, eps=cfg.layer_norm_eps)
        self.decoder = Linear(cfg.n_embd, cfg.vocab_size)  # weight tied by Bert.__init__

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.layer_norm(gelu(self.dense(x))))  # (B, T, V)


class Bert(nn.Module):
    def __init__(self, cfg: BertConfig):
        super().__init__()
        self.cfg = cfg
        self.embeddings = BertEmbeddings(cfg)
        self.emb_dropout = Dropout(cfg.dropout)
        self.layers = nn.ModuleList(BertLayer(cfg) for _ in range(cfg.n_layer))
        self.mlm_head = BertMLMHead(cfg)
        self.pooler = Linear(cfg.n_embd, cfg.n_embd)
        self.cls_dropout = Dropout(cfg.dropout)
        self.classifier = Linear(cfg.n_embd, cfg.num_labels)
        self.mlm_head.decoder.weight = self.embeddings.word_embeddings.weight  # tied
        self.gradient_checkpointing = False
        init_gpt2_(self, cfg.n_layer, ("attn.o_proj.weight", "mlp.fc_out.weight"))

    def encode(self, input_ids, attention_mask=None, token_type_ids=None) -> torch.Tensor:
        """-> hidden states (B, T, C) of the last layer."""
        check_model_inputs(self.cfg, input_ids, attention_mask)
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        expect_shape("token_type_ids", token_type_ids, tuple(input_ids.shape))
        mask = None if attention_mask is None else attention_mask.bool()
        x = self.emb_dropout(self.embeddings(input_ids, token_type_ids))  # (B, T, C)
        return run_blocks(self, self.layers, x, mask)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        head: str = "mlm",
    ) -> ModelOutput:
        """head "mlm": logits (B, T, V), labels (B, T) with -100 where no token was masked.
        head "cls": logits (B, num_labels), labels (B,) class ids.
        attention_mask: (B, T), 1/True = real token."""
        if head not in HEADS:
            raise ValueError(f"head: expected one of {HEADS}, got {head!r}")
        if labels is not None:
            expect_int("labels", labels)
        x = self.encode(input_ids, attention_mask, token_type_ids)
        if head == "mlm":
            logits = self.mlm_head(x)  # (B, T, V)
        else:
            pooled = torch.tanh(self.pooler(x[:, 0]))  # (B, C): the [CLS] position
            logits = self.classifier(self.cls_dropout(pooled))  # (B, num_labels)
        loss = None if labels is None else token_loss(logits, labels)  # -100: not masked
        return ModelOutput(logits, loss)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
