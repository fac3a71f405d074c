"""Triton kernels, one per file, each with a ``torch.autograd.Function`` wrapper.

``dispatch`` decides when ``myllm101.fast`` uses them (see ``MYLLM101_KERNELS``). The kernel modules
(``rmsnorm``, ``rope``, ``int8_matmul``, ``attention``, ``cross_entropy``) import triton, so they are
not imported here: ``import myllm101.kernels`` must work on machines without triton.
On CPU the kernels run in Triton's interpreter (``TRITON_INTERPRET=1``); on CUDA they compile.
"""

from myllm101.kernels.dispatch import (
    KERNEL_DTYPES,
    interpreting,
    kernel_supports,
    kernels_mode,
    triton_available,
    use_kernel,
)

__all__ = [
    "KERNEL_DTYPES",
    "interpreting",
    "kernel_supports",
    "kernels_mode",
    "triton_available",
    "use_kernel",
]
