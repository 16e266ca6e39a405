# Two entry points, each self-contained on a machine with Python >= 3.10 and pip:
#   make demo   set up .venv and run the full pipeline on a simulated cohort
#   make test   set up .venv with the test peers and run the test suite
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# public databases and atlases live beside the project, never inside it; without that
# folder (a fresh clone elsewhere) the user cache, where `microvba demo` fetches what is
# missing on first use (`microvba data fetch` fetches everything)
SHARED ?= $(abspath ../shared/data)
export MICROVBA_DATA ?= $(if $(wildcard $(SHARED)),$(SHARED),$(HOME)/.cache/microvba)
DEMO_OUT ?= demo_output
PYTEST_ARGS ?=

.PHONY: demo test lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.runtime: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e .
	touch $@

$(VENV)/.test: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e ".[test,peers]"
	touch $@ $(VENV)/.runtime

demo: $(VENV)/.runtime
	$(BIN)/microvba demo --out $(DEMO_OUT)

test: $(VENV)/.test
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/python -m pytest -n 2 $(PYTEST_ARGS)

lint: $(VENV)/.test
	$(BIN)/ruff check src tests benchmarks

clean:
	rm -rf $(VENV) $(DEMO_OUT) .pytest_cache .ruff_cache
