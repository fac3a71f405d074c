"""Whole-model pruning (``myllm101 prune``).

    from myllm101.prune import prune_unstructured
    masks = prune_unstructured(model, "wanda", 0.5, calib_batches=batches)   # in place
    keeper = myllm101.fast.prune.keep_masks(model, masks, optimizer)          # recovery training

unstructured.py: magnitude, Wanda and 2:4 masks on every Linear of the transformer blocks (zeros,
same shapes). structured.py: whole GQA groups and SwiGLU neurons of a LLaMA removed (smaller
shapes, recorded in the config). recover.py: a short fine-tune after pruning, full (masks kept
through every step) or LoRA (merged, then masked again); either way the saved zeros are exactly
the pruned ones. semi_structured.py: 2:4 weights as torch's semi-structured sparse tensors (CUDA
only). cli.py:
``myllm101 prune``. The scores and masks themselves are in fast/prune.py (NumPy twin:
reference/prune.py).
"""

from myllm101.prune.recover import mean_loss, recover, recover_lora
from myllm101.prune.structured import prune_structured, remove_heads, remove_neurons
from myllm101.prune.unstructured import (
    METHODS,
    SCOPES,
    block_linears,
    collect_input_norms,
    prune_unstructured,
)

__all__ = ["METHODS", "SCOPES", "block_linears", "collect_input_norms", "mean_loss",
           "prune_structured", "prune_unstructured", "recover", "recover_lora", "remove_heads",
           "remove_neurons"]  # fmt: skip
