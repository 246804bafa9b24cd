# latentmem task runner. `make help` lists the targets.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
UI := latentmem/server/ui
UI_ASSETS := $(UI)/static/vendor/versions.json
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: help install demo test lint typecheck unit fuzz ui ui-test ui-shots clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,bench,postgres]'
	HF_HUB_OFFLINE=1 $(BIN)/python -m latentmem.encode.onnx  # the ONNX embedder's graph, once
	@touch $(STAMP)

# The web explorer's libraries: npm ci from the committed lockfile, copied into the package.
$(UI_ASSETS): $(UI)/package.json $(UI)/package-lock.json $(UI)/build.py | $(BIN)/python
	$(BIN)/python $(UI)/build.py

install: $(STAMP) $(UI_ASSETS) ## create .venv and install latentmem with its dev tools and the web explorer's assets

ui: ## rebuild the web explorer's assets (npm ci + copy into latentmem/server/ui/static/vendor)
	$(BIN)/python $(UI)/build.py

ui-test: $(STAMP) $(UI_ASSETS) ## the web explorer in headless Chromium (needs /usr/bin/chromium)
	$(BIN)/pytest -q tests/test_ui.py tests/test_ui_api.py

ui-shots: $(STAMP) $(UI_ASSETS) ## the browser tests, saving each view's screenshot to docs/ui/
	LATENTMEM_UI_SHOTS=docs/ui $(BIN)/pytest -q tests/test_ui.py

demo: $(STAMP) $(UI_ASSETS) ## build a memory from the sample conversation, search it, export and re-import
	$(BIN)/latentmem demo

lint: $(STAMP) ## ruff
	$(BIN)/ruff check latentmem tests

typecheck: $(STAMP) ## mypy on the package
	$(BIN)/mypy latentmem

unit: $(STAMP) $(UI_ASSETS) ## the tests that need no model (fast)
	$(BIN)/pytest -q -m "not slow"

# Worker processes for the full suite: every test makes its own store, server or database,
# so they run apart; two halve CI's wall time on its two cores (TEST_WORKERS=0: one process).
TEST_WORKERS ?= 2

test: $(STAMP) $(UI_ASSETS) lint typecheck ## ruff, mypy, then every test (slow ones included)
	$(BIN)/pytest -q -n $(TEST_WORKERS)

fuzz: $(STAMP) ## a longer schema fuzz of the server, fresh randomness: make fuzz N=20000
	LATENTMEM_FUZZ_EXAMPLES=$(or $(N),20000) LATENTMEM_FUZZ_SEED=$$(od -An -N4 -tu4 /dev/urandom) \
		$(BIN)/pytest -q -s tests/test_fuzz.py

clean: ## remove the virtualenv and caches
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache $(UI)/node_modules $(UI)/static/vendor
