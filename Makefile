# Two commands matter: `make demo` and `make test`. Both install what they need first.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip
STAMP  := $(VENV)/.installed

.PHONY: install test demo bench lint format clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

# torch is pinned and installed first, so the open range in pyproject.toml never pulls a CUDA build.
$(STAMP): $(PY) pyproject.toml
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

test: install
	$(PY) -m pytest -q parity_tests tests

demo: install
	$(VENV)/bin/myllm101 parity

bench: install
	$(PY) -m pytest -q benchmarks --benchmark-only --benchmark-json=benchmarks/results/bench.json
	$(PY) -m benchmarks.report benchmarks/results/bench.json

lint: install
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

format: install
	$(VENV)/bin/ruff format . && $(VENV)/bin/ruff check --fix .

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis .benchmarks *.egg-info
