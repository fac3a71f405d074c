"""train/host_memory.py: freed blocks are reused (no fresh page faults), the policy is checked,
and the trainer and finetune record what is in force. The allocation test runs in child
processes: malloc's settings are process-wide and cannot be undone."""

import os
import subprocess
import sys

import pytest

from myllm101.train import host_memory
from myllm101.train.host_memory import ENV_VAR, malloc_policy, reuse_freed_memory

FAULTS = """
import resource, sys, torch
from myllm101.train.host_memory import reuse_freed_memory
print(reuse_freed_memory(sys.argv[1]))
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
torch.ones(2**24)  # 64 MB: over glibc's largest mmap threshold (32 MB)
before = faults()
for _ in range(10):  # what a training step does to its logits: allocate, write, free
    block = torch.ones(2**24)
    del block
print(faults() - before)
"""


def page_faults(policy: str) -> tuple[str, int]:
    """(what reuse_freed_memory said, minor page faults of 10 allocations of 64 MB) in a child."""
    env = {**os.environ}
    env.pop(ENV_VAR, None)
    out = subprocess.run([sys.executable, "-c", FAULTS, policy], capture_output=True, text=True,
                         env=env, check=True, timeout=120).stdout.split("\n")  # fmt: skip
    return out[0], int(out[1])


def test_reuse_takes_freed_blocks_back_without_new_page_faults():
    said, reused = page_faults("reuse")
    if said != "reuse":
        pytest.skip(f"malloc settings not available on this system: {said}")
    _, fresh = page_faults("system")
    # glibc's default maps each 64 MB block afresh: at least one fault per 2 MB huge page (4 KB
    # pages: 16k); reused heap blocks are already mapped (seen: 0 faults, or one block's worth
    # when something else took the freed block first; system: 10 blocks' worth)
    assert fresh >= 10 * 32
    assert reused * 4 < fresh


def test_system_policy_changes_nothing_and_says_so(monkeypatch):
    monkeypatch.setattr(host_memory, "_applied", None)
    assert reuse_freed_memory("system") == f"system ({ENV_VAR}=system)"
    assert host_memory._applied is None


@pytest.mark.parametrize("value", ["keep", "", "mmap"])
def test_bad_policy_names_the_setting(monkeypatch, value):
    monkeypatch.setenv(ENV_VAR, value)
    with pytest.raises(ValueError, match=f"{ENV_VAR}: expected one of reuse, system"):
        malloc_policy()
    with pytest.raises(ValueError, match=ENV_VAR):
        reuse_freed_memory()
    with pytest.raises(ValueError, match="malloc policy: expected one of reuse, system"):
        reuse_freed_memory(value or "none")


def test_policy_from_the_environment(monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    assert malloc_policy() == "reuse"
    monkeypatch.setenv(ENV_VAR, " System ")
    assert malloc_policy() == "system"


def test_ab_script_writes_its_table(tmp_path):
    """benchmarks/host_memory_ab.py at the smoke shape: both policies' rows, ratios, faults; its
    numbers are timings, so only the table's make-up is checked."""
    from benchmarks import host_memory_ab

    out = tmp_path / "HOST_MEMORY.md"
    host_memory_ab.main(["--archs", "gpt", "--pairs", "1", "--steps", "2", "--size", "smoke",
                         "--out", str(out)])  # fmt: skip
    text = out.read_text()
    rows = [line for line in text.splitlines() if line.startswith("| gpt |")]
    assert len(rows) == 2 and "| 1.00x |" in rows[0]
    assert "system (MYLLM101_MALLOC=system)" in rows[0]
    assert "Machine: " in text and "B=2" in text and "2 child processes" in text
