"""LoRA: low-rank adaptation of a frozen linear layer (Hu et al., 2021).

    y = x W^T + b + (alpha / r) * (x A^T) B^T

W (out, in) and b (out,) are the pretrained layer and stay frozen; only A (r, in) and B (out, r)
are trained, so a layer with in*out weights learns through r*(in + out) numbers. B starts at zero,
so a fresh adapter leaves the model unchanged. ``alpha / r`` keeps the update's size roughly
independent of r. After training the update can be folded into the weight,
``W' = W + (alpha / r) B A`` (``lora_merge``), so inference costs exactly one matmul again.
"""

import numpy as np

from myllm101.checks import check_lora_adapter, check_lora_linear, expect_shape, lora_scale


def lora_linear_forward(
    x: np.ndarray, w: np.ndarray, b, A: np.ndarray, B: np.ndarray, alpha: float
):
    """x: (..., in), w: (out, in), b: (out,) or None, A: (r, in), B: (out, r) -> y: (..., out), cache."""
    check_lora_linear(x, w, b, A, B)
    scale = lora_scale(A, alpha)
    h = x @ A.T  # (..., r): the input projected onto the adapter's r directions
    y = x @ w.T + scale * (h @ B.T)  # (..., out)
    if b is not None:
        y = y + b
    return y, (x, w, A, B, h, scale)


def lora_linear_backward(dy: np.ndarray, cache) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """dy: (..., out) -> (dx: (..., in), dA: (r, in), dB: (out, r)). W and b are frozen: no dW, db."""
    x, w, A, B, h, scale = cache
    expect_shape("dy", dy, (*x.shape[:-1], w.shape[0]))
    x2 = x.reshape(-1, x.shape[-1])  # (N, in)
    dy2 = dy.reshape(-1, dy.shape[-1])  # (N, out)
    h2 = h.reshape(-1, h.shape[-1])  # (N, r)
    dB = scale * (dy2.T @ h2)  # (out, r): y gets scale * h B^T
    dh = scale * (dy2 @ B)  # (N, r)
    dA = dh.T @ x2  # (r, in): h = x A^T
    # x reaches y along two paths: the frozen weight and the adapter
    dx = dy2 @ w + dh @ A  # (N, in)
    return dx.reshape(x.shape), dA, dB


def lora_merge(w: np.ndarray, A: np.ndarray, B: np.ndarray, alpha: float) -> np.ndarray:
    """W' = W + (alpha / r) B A: one (out, in) weight that computes the adapted layer."""
    check_lora_adapter(w, A, B)
    return w + lora_scale(A, alpha) * (B @ A)


def lora_unmerge(w_merged: np.ndarray, A: np.ndarray, B: np.ndarray, alpha: float) -> np.ndarray:
    """W = W' - (alpha / r) B A: undo ``lora_merge`` (exact up to one rounding per element)."""
    check_lora_adapter(w_merged, A, B)
    return w_merged - lora_scale(A, alpha) * (B @ A)


def lora_weight_backward(
    dw: np.ndarray, A: np.ndarray, B: np.ndarray, alpha: float
) -> tuple[np.ndarray, np.ndarray]:
    """dW' (out, in) -> (dA (r, in), dB (out, r)), the chain rule through W' = W + (alpha / r) B A.

    A model run on the merged weight W' computes exactly the adapted layer (without adapter
    dropout), so the adapter's gradients follow from the weight gradient any backward pass already
    gives: dW'_ij reaches B_ik through A_kj and A_kj through B_ik.
    """
    check_lora_adapter(dw, A, B)
    scale = lora_scale(A, alpha)
    dA = scale * (B.T @ dw)  # (r, out) @ (out, in) -> (r, in)
    dB = scale * (dw @ A.T)  # (out, in) @ (in, r) -> (out, r)
    return dA, dB


# --------------------------------------------------------------------------------------------------
# LoRA fine-tuning of a whole reference model (ReferenceGPT, ReferenceLlama)


def lora_model_step(model, adapters: dict, alpha: float, optimizer, input_ids, labels) -> float:
    """One LoRA fine-tuning step of a reference model; returns the loss before the update.

    adapters: {weight name (e.g. "layers.0.self_attn.q_proj.weight"): (A (r, in), B (out, r))};
    optimizer: a reference optimizer (e.g. ``reference.optim.AdamW``) over [A, B of the first
    name, A, B of the second, ...] in the order of ``adapters``. The frozen weights are never
    written: each target weight is replaced by its merged copy for the forward and backward pass,
    then the original array object is put back (no adapter dropout, which would break the merge).

        W' = W + (alpha / r) B A  ->  forward, backward: dW'  ->  dA, dB  ->  optimizer.step
    """
    frozen = {name: model.params[name] for name in adapters}
    try:
        for name, (A, B) in adapters.items():
            model.params[name] = lora_merge(frozen[name], A, B, alpha)  # (out, in) W'
        _, loss, cache = model.forward(input_ids, labels=labels)
        grads = model.backward(cache)
    finally:
        model.params.update(frozen)  # the very arrays the caller gave: bitwise unchanged
    adapter_grads = []
    for name, (A, B) in adapters.items():
        adapter_grads.extend(lora_weight_backward(grads[name], A, B, alpha))  # dA, dB
    optimizer.step(adapter_grads)  # updates the A and B arrays in place
    return float(loss)
