# latentmem task runner. `make help` lists the targets.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: help install demo test lint typecheck unit fuzz clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,bench,postgres]'
	HF_HUB_OFFLINE=1 $(BIN)/python -m latentmem.encode.onnx  # the ONNX embedder's graph, once
	@touch $(STAMP)

install: $(STAMP) ## create .venv and install latentmem with its dev tools

demo: $(STAMP) ## build a memory from the sample conversation, search it, export and re-import
	$(BIN)/latentmem demo

lint: $(STAMP) ## ruff
	$(BIN)/ruff check latentmem tests

typecheck: $(STAMP) ## mypy on the package
	$(BIN)/mypy latentmem

unit: $(STAMP) ## the tests that need no model (fast)
	$(BIN)/pytest -q -m "not slow"

test: $(STAMP) lint typecheck ## ruff, mypy, then every test (slow ones included)
	$(BIN)/pytest -q

fuzz: $(STAMP) ## a longer schema fuzz of the server, fresh randomness: make fuzz N=20000
	LATENTMEM_FUZZ_EXAMPLES=$(or $(N),20000) LATENTMEM_FUZZ_SEED=$$(od -An -N4 -tu4 /dev/urandom) \
		$(BIN)/pytest -q -s tests/test_fuzz.py

clean: ## remove the virtualenv and caches
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
