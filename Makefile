# Two commands do all set-up on a fresh machine: `make run` and `make test`.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
QUESTION ?= How does ragcord check the citations in its answers?

.PHONY: run test install lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip wheel

# pip's wheel cache keeps the llama-cpp-python build (15-18 min from source on 2 cores):
# later installs reuse it instead of compiling again.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --progress-bar off -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

run: install
	$(BIN)/ragcord ingest docs
	$(BIN)/ragcord ask "$(QUESTION)"

lint: install
	$(BIN)/ruff check bot ingest store tests bench
	$(BIN)/ruff format --check bot ingest store tests bench
	$(BIN)/mypy

test: install lint
	$(BIN)/python -m pytest -q

bench: install
	$(BIN)/python bench/ingest.py
	$(BIN)/python bench/answer.py

clean:
	rm -rf $(VENV) data .pytest_cache .mypy_cache .ruff_cache
