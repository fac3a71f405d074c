"""Triton kernels, one per file, each with a torch.autograd.Function wrapper (coming next).

Planned: rmsnorm, rope, flash attention, int8 matmul, fused cross-entropy. They are tested on CPU
with TRITON_INTERPRET=1 and run for real on a CUDA device; ``myllm101.fast`` dispatches to them.
"""
