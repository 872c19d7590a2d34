# The README's two commands: `make run` and `make test`. Each does its own set-up.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
# The source tree keeps its data in ./var (an installed service uses MLEG_VAR_DIR, systemd's
# STATE_DIRECTORY or the user's data directory); a value set by the caller wins.
export MLEG_VAR_DIR ?= $(CURDIR)/var

.PHONY: run test lint bench system-deps clean

$(STAMP): pyproject.toml setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/mleg registry import config/demo-register.csv
	$(BIN)/mleg chat

system-deps:
	bash scripts/install-test-deps.sh

lint: $(STAMP)
	$(BIN)/ruff check .

test: $(STAMP) system-deps lint
	$(BIN)/pytest

bench: $(STAMP) system-deps
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) var .pytest_cache .ruff_cache
