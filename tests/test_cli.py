from pathlib import Path

from myllm101 import cli
from myllm101.compare import COMPONENTS, all_cases

ROOT = Path(__file__).resolve().parents[1]


def test_parity_command_prints_every_component(capsys):
    assert cli.main(["parity"]) == 0
    out = capsys.readouterr().out
    names = {c.component for c in all_cases()}
    for name in names:
        assert f"\n{name}" in out
    assert f"{len(all_cases())}/{len(all_cases())} components agree" in out


def test_every_component_exists_twice_with_tests_and_cases():
    # a component with a reference file must have its fast twin, a parity test file and a
    # side-by-side case (used by the demo's table and the benchmarks)
    present = [c for c in COMPONENTS if (ROOT / "myllm101/reference" / f"{c}.py").exists()]
    assert "rmsnorm" in present
    for c in present:
        assert (ROOT / "myllm101/fast" / f"{c}.py").exists(), c
        assert (ROOT / "parity_tests" / f"test_{c}.py").exists(), c
        assert (ROOT / "myllm101/compare" / f"{c}.py").exists(), c
    assert {case.component for case in all_cases()} == set(present)
