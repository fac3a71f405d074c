"""Linear weights prepacked once for oneDNN's CPU GEMM, for inference.

    model = prepack_for_inference(model.eval())   # every float32 Linear on the CPU, in place
    logits = model(ids).logits                      # the same model, faster GEMMs
    unpack(model)                                   # plain Linears again (to save or train)

``F.linear`` hands the CPU GEMM a row-major (out, in) weight, which the kernel re-blocks as it
reads it at every call. oneDNN's linear (``torch.ops.mkldnn._linear_pointwise``, what
``torch.compile``'s CPU weight freezing calls) takes the weight reordered once into the blocked
layout its kernels stream. Measured on SmolLM2-135M's shapes (1 thread, each weight rotated
through 200 MB so it comes from memory, AMD EPYC with AVX-512, time per call, F.linear vs
prepacked):

    shape (out x in)   M = 1 (decode)        M = 128 (prefill)
    960 x 576          0.28 -> 0.24 ms       2.32 -> 1.92 ms
    3072 x 576         0.74 -> 0.46 ms       7.26 -> 6.75 ms
    576 x 1536         0.44 -> 0.45 ms       3.77 -> 2.93 ms
    49152 x 576        9.5  -> 6.7  ms       130  -> 98   ms   (the LM head)

Numerics: oneDNN sums in another order, so outputs match ``F.linear`` to float32 rounding
(~1e-6 relative; tests/test_prepack.py), not bit for bit; greedy tokens agree but for near-ties.

Where: the CPU, float32 weights, a torch built with oneDNN (``torch.backends.mkldnn``), and
inference only (the packed weight has no autograd; a model in training mode is refused). Packed
weights are opaque oneDNN tensors: ``state_dict`` cannot be saved from a packed model, so
``unpack`` first (it restores every weight exactly, and the tie of an LM head to its embedding).
"""

from __future__ import annotations

import torch
from torch import nn

from myllm101.fast.linear import Linear


def can_prepack() -> bool:
    """This torch build has oneDNN's CPU linear."""
    return torch.backends.mkldnn.is_available()


class PackedLinear(nn.Module):
    """A Linear whose weight is prepacked for oneDNN: x (..., in) -> (..., out), float32."""

    def __init__(self, linear: nn.Linear, tied: nn.Parameter | None = None):
        super().__init__()
        w = linear.weight.detach()
        self.in_features, self.out_features = w.shape[1], w.shape[0]
        self.register_buffer("packed", torch.ops.mkldnn._reorder_linear_weight(w, 1))
        bias = None if linear.bias is None else linear.bias.detach()
        self.register_buffer("bias", bias)
        self.plain_type = type(linear)  # what unpack() rebuilds
        # the shared Parameter (an LM head tied to its embedding), kept for unpack() as a plain
        # attribute: registered, it would be this module's parameter too
        object.__setattr__(self, "tied", tied)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.in_features:
            raise ValueError(f"x: expected (..., {self.in_features}), got {tuple(x.shape)}")
        if x.dtype != torch.float32:
            raise ValueError(f"x: expected float32 (a prepacked Linear), got {x.dtype}")
        return torch.ops.mkldnn._linear_pointwise(x, self.packed, self.bias, "none", [], "")

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, prepacked"


def _packable(module: nn.Module) -> bool:
    w = getattr(module, "weight", None)
    return (
        type(module) in (Linear, nn.Linear)
        and isinstance(w, torch.Tensor)
        and w.dtype == torch.float32
        and w.device.type == "cpu"
    )


def prepack_for_inference(model: nn.Module) -> nn.Module:
    """Replace every float32 CPU Linear of ``model`` by a ``PackedLinear``, in place; returns it.
    Quantized, LoRA and reduced-precision projections are left as they are."""
    if not can_prepack():
        raise RuntimeError(
            "prepack_for_inference: this torch build has no oneDNN (mkldnn) CPU linear"
        )
    if model.training:
        raise ValueError(
            "model: expected eval mode (prepacked weights have no gradient): call .eval()"
        )
    linears = {id(m.weight) for m in model.modules() if isinstance(m, nn.Linear)}
    shared = {  # a Linear weight another module also owns (an LM head tied to its embedding)
        id(p): p
        for m in model.modules()
        if not isinstance(m, nn.Linear)
        for p in m.parameters(recurse=False)
        if id(p) in linears
    }
    for module in list(model.modules()):
        for child_name, child in list(module.named_children()):
            if _packable(child):
                tied = shared.get(id(child.weight))
                setattr(module, child_name, PackedLinear(child, tied))
    return model


def unpack(model: nn.Module) -> nn.Module:
    """Undo ``prepack_for_inference``, in place: every PackedLinear becomes the Linear it was,
    weights bitwise restored, a tied weight tied again; returns ``model``."""
    for module in list(model.modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, PackedLinear):
                plain = child.plain_type(
                    child.in_features, child.out_features, child.bias is not None
                )
                weight = (
                    child.tied if child.tied is not None else nn.Parameter(child.packed.to_dense())
                )
                plain.weight = weight
                if child.bias is not None:
                    plain.bias = nn.Parameter(child.bias.clone())
                setattr(module, child_name, plain.eval())
    return model
