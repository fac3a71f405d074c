"""train/host_memory.py: freed blocks are reused (no fresh page faults), the policy is checked,
and the trainer and finetune record what is in force. The allocation test runs in child
processes: malloc's settings are process-wide and cannot be undone."""

import os
import statistics
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
for _ in range(10):  # what a training step does to its logits: allocate, write, free
    before = faults()
    block = torch.ones(2**24)
    del block
    print(faults() - before)
"""


def page_faults(policy: str) -> tuple[str, list[int]]:
    """(what reuse_freed_memory said, minor page faults of each of 10 allocations of 64 MB), in a
    child process."""
    env = {**os.environ}
    env.pop(ENV_VAR, None)
    out = subprocess.run([sys.executable, "-c", FAULTS, policy], capture_output=True, text=True,
                         env=env, check=True, timeout=120).stdout.splitlines()  # fmt: skip
    return out[0], [int(n) for n in out[1:]]


def test_reuse_takes_freed_blocks_back_without_new_page_faults():
    said, reused = page_faults("reuse")
    if said != "reuse":
        pytest.skip(f"malloc settings not available on this system: {said}")
    _, fresh = page_faults("system")
    assert len(reused) == len(fresh) == 10
    # glibc's default maps each 64 MB block afresh: at least one fault per 2 MB huge page (4 KB
    # pages: 16k); a reused heap block is already mapped (seen: 0 faults, and now and then a
    # block's worth, when the kernel took the idle pages back: hence medians)
    assert statistics.median(fresh) >= 32
    assert statistics.median(reused) * 10 < statistics.median(fresh)


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


def test_as_shipped_puts_ours_under_reuse_beside_peers_under_system():
    from benchmarks.host_memory_ab import as_shipped

    def run(*times):
        return [{"said": "x", "times": list(times), "faults": 0, "rss_mb": 1}]

    runs = {
        "gpt": {"system": run(2.0), "reuse": run(1.0)},
        "nanogpt-peer": {"system": run(4.0), "reuse": run(0.5)},
        "llama": {"system": run(3.0), "reuse": run(3.0)},  # no llama peer measured: no rows
    }
    rows = [line for line in as_shipped(runs) if line.startswith("| ")][1:]
    assert rows == [
        "| gpt | reuse | 1000.0 | 1.00x |",
        "| nanogpt-peer | system | 4000.0 | 0.25x |",
    ]
