"""Loaded by pytest before any test module, so settings here precede the first ``import torch``."""

import os

# torch's CPU allocator asks the kernel for transparent huge pages only when this is set (NumPy
# always does): without it, every fresh 100+ MB tensor is faulted in 4 KB pages, which made large
# softmax / loss calls ~2x slower here. Same default as ``myllm101/__init__.py``.
os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")

# Without a GPU, Triton kernels run in Triton's interpreter on CPU tensors; this must be set before
# triton is first imported. On a CUDA machine set TRITON_INTERPRET=0 (or leave it unset) to compile.
if not os.path.exists("/dev/nvidia0"):
    os.environ.setdefault("TRITON_INTERPRET", "1")

# hypothesis profiles for parity_tests/ and tests/: "default" keeps CI fast, "thorough" runs 12x the
# examples everywhere (explicit per-test counts scale too: parity_tests.helpers.examples);
# deadline=None: torch's first call in a process is slow
from hypothesis import HealthCheck, settings  # noqa: E402

settings.register_profile(
    "default", max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile(
    "thorough", max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

# in CI (or with MYLLM101_STRICT=1) a test that skips for a missing oracle or data package fails
pytest_plugins = ("tests.strict_skips",)
