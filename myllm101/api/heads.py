"""BERT with its task head as the default: what AutoModelForMaskedLM / ...ForSequenceClassification
build. The same module as ``fast.bert.Bert`` (same state_dict names, same files on disk); only the
``head`` a forward pass uses by default differs, so ``model(ids).logits`` is what the task needs.
"""

from __future__ import annotations

import torch

from myllm101.fast.bert import Bert
from myllm101.fast.blocks import ModelOutput


class BertForMaskedLM(Bert):
    """``forward`` -> logits (B, T, vocab_size) over every position (``head="mlm"``)."""

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                labels: torch.Tensor | None = None, token_type_ids: torch.Tensor | None = None,
                head: str = "mlm") -> ModelOutput:  # fmt: skip
        return super().forward(input_ids, attention_mask, labels, token_type_ids, head)


class BertForSequenceClassification(Bert):
    """``forward`` -> logits (B, num_labels) from the pooled [CLS] position (``head="cls"``)."""

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                labels: torch.Tensor | None = None, token_type_ids: torch.Tensor | None = None,
                head: str = "cls") -> ModelOutput:  # fmt: skip
        return super().forward(input_ids, attention_mask, labels, token_type_ids, head)
