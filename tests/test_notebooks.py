"""The course notebooks (notebooks/NN_name.py + .ipynb): paired, stored clean, and run top to bottom.

Each notebook is written as a jupytext "percent" script (`notebooks/NN_name.py`, the source of truth)
and stored as `notebooks/NN_name.ipynb` without outputs (`jupytext --to ipynb notebooks/NN_name.py`).
Here:
- every number 01..13 of the course has exactly one notebook, in both forms;
- each .ipynb holds the same cells as jupytext's conversion of its .py, and no outputs;
- each .ipynb runs top to bottom in a fresh `python3` kernel (nbclient), from the repository root,
  with `MPLBACKEND=Agg`; a notebook ends with an assertion that the reference and the fast code
  agree, so a run that raises is a failed claim, not only a broken cell.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
jupytext = pytest.importorskip("jupytext")
nbclient = pytest.importorskip("nbclient")

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
# the course, in order (notebooks/README.md): one notebook per number, named NN_topic
EXPECTED_NUMBERS = [f"{n:02d}" for n in range(1, 14)]
CELL_TIMEOUT_S = 120  # per cell; each notebook is meant to run in ~20 s on 2 cores


def _scripts() -> list[Path]:
    return sorted(NOTEBOOKS.glob("[0-9][0-9]_*.py"))


def _ipynbs() -> list[Path]:
    return sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))


def _cells(nb) -> list[tuple[str, str]]:
    """(cell_type, source) per cell, trailing whitespace ignored: what a reader sees."""
    return [(cell.cell_type, cell.source.rstrip()) for cell in nb.cells]


def test_every_course_number_has_one_notebook_in_both_forms():
    scripts = {p.name[:2]: [] for p in _scripts()}
    for p in _scripts():
        scripts[p.name[:2]].append(p.stem)
    missing = [n for n in EXPECTED_NUMBERS if n not in scripts]
    assert not missing, f"notebooks/: expected a NN_name.py for each of {missing}, found none"
    doubled = {n: stems for n, stems in scripts.items() if len(stems) > 1}
    assert not doubled, f"notebooks/: expected one notebook per number, got {doubled}"
    unexpected = sorted(set(scripts) - set(EXPECTED_NUMBERS))
    assert not unexpected, f"notebooks/: numbers outside 01..13: {unexpected}"
    stems_py = {p.stem for p in _scripts()}
    stems_nb = {p.stem for p in _ipynbs()}
    assert stems_py == stems_nb, (
        f".py without .ipynb: {sorted(stems_py - stems_nb)}; "
        f".ipynb without .py: {sorted(stems_nb - stems_py)} "
        "(make the .ipynb with `.venv/bin/jupytext --to ipynb notebooks/NN_name.py`)"
    )


def _pairing_problems(script: Path, stored) -> list[str]:
    """What is wrong with a stored notebook ``stored`` as the clean conversion of ``script``."""
    problems = []
    if _cells(stored) != _cells(jupytext.read(script)):
        problems.append(
            f"differs from its script {script.name}: the .py is the source of truth; regenerate "
            f"with `.venv/bin/jupytext --to ipynb notebooks/{script.name}`"
        )
    for i, cell in enumerate(stored.cells):
        if cell.cell_type == "code" and (cell.outputs or cell.execution_count is not None):
            problems.append(f"cell {i}: stored with outputs or an execution count")
    return problems


@pytest.mark.parametrize("script", _scripts(), ids=lambda p: p.stem)
def test_ipynb_is_the_jupytext_conversion_of_its_script_without_outputs(script: Path):
    ipynb = script.with_suffix(".ipynb")
    assert ipynb.exists(), f"{ipynb.name}: missing; run `.venv/bin/jupytext --to ipynb {script}`"
    problems = _pairing_problems(script, nbformat.read(ipynb, as_version=4))
    assert not problems, f"{ipynb.name}: " + "; ".join(problems)


def test_the_pairing_check_catches_a_stale_or_executed_notebook(tmp_path: Path):
    """The check above must see an edited script and a stored output (else it cannot fail)."""
    script = tmp_path / "00_demo.py"
    script.write_text("# %% [markdown]\n# A title\n\n# %%\nx = 1 + 1\n")
    clean = jupytext.read(script)
    assert _cells(clean) == [("markdown", "A title"), ("code", "x = 1 + 1")]
    assert _pairing_problems(script, clean) == []
    executed = jupytext.read(script)
    executed.cells[1].execution_count = 1
    executed.cells[1].outputs = [nbformat.v4.new_output("stream", name="stdout", text="2\n")]
    assert [p[:7] for p in _pairing_problems(script, executed)] == ["cell 1:"]
    script.write_text("# %% [markdown]\n# A title\n\n# %%\nx = 1 + 2\n")  # edited, not converted
    assert [p[:7] for p in _pairing_problems(script, clean)] == ["differs"]


def _kernel_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The kernel's environment. (Its interpreter is this one: jupyter_client runs a kernelspec's
    `python` as sys.executable, the .venv's; the test below checks it.)"""
    monkeypatch.setenv("MPLBACKEND", "Agg")
    # the notebooks' NumPy matrices are tiny: a second BLAS thread only spins (on a busy 2-core
    # machine the reference GPT's steps ran 15x slower with two)
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "1")
    monkeypatch.setenv("PYTHONPATH", str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))


def _execute(nb) -> None:
    """Run every cell in a fresh kernel from the repository root; raises on the first error."""
    client = nbclient.NotebookClient(
        nb,
        kernel_name="python3",
        timeout=CELL_TIMEOUT_S,
        resources={"metadata": {"path": str(ROOT)}},  # cwd = repository root (notebooks/README.md)
    )
    client.execute()  # raises CellExecutionError naming the cell and its traceback


def test_a_failing_final_assertion_fails_the_run(monkeypatch: pytest.MonkeyPatch):
    """The run check must fail on a notebook whose closing assertion fails; the kernel runs in
    the repository root with the .venv's interpreter."""
    _kernel_env(monkeypatch)
    bindir = Path(sys.executable).parent
    nb = jupytext.reads(
        f"# %%\nimport os, sys\nassert os.getcwd() == {str(ROOT)!r}, os.getcwd()\n"
        f"assert sys.executable.startswith({str(bindir)!r}), sys.executable\n"
        "# %%\nassert 1 + 1 == 3, 'the two disagree'\n",
        fmt="py:percent",
    )
    with pytest.raises(nbclient.exceptions.CellExecutionError, match="the two disagree"):
        _execute(nb)


@pytest.mark.slow
@pytest.mark.parametrize("ipynb", _ipynbs(), ids=lambda p: p.stem)
def test_notebook_runs_top_to_bottom(ipynb: Path, monkeypatch: pytest.MonkeyPatch):
    _kernel_env(monkeypatch)
    _execute(nbformat.read(ipynb, as_version=4))
