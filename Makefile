# The README's two commands: `make run` and `make test`. Each does its own set-up.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
# The source tree keeps its data in ./var (an installed service uses MLEG_VAR_DIR, systemd's
# STATE_DIRECTORY or the user's data directory); a value set by the caller wins.
export MLEG_VAR_DIR ?= $(CURDIR)/var

.PHONY: run test test-fast lint bench system-deps smoke clean

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
	$(BIN)/pytest -n 2 --dist loadgroup

# The daily loop: SQLite only, without the slow fault runs and the installed-wheel smoke test.
# `make test` (what CI runs) stays the whole suite.
test-fast: $(STAMP) lint
	$(BIN)/pytest -q -n 2 --dist loadgroup -m "not postgres and not slow" --deselect tests/test_installed_wheel.py

# The wheel as an operator installs it (part of `make test` too): built, installed into a fresh
# venv outside the tree, and the demo journey, status, serve and the systemd unit checked there.
smoke: $(STAMP) system-deps
	$(BIN)/pytest -q tests/test_installed_wheel.py

# Every benchmark, each figure with its target (met/missed) and a summary at the end; options
# go to every benchmark, e.g. `make bench BENCH_ARGS="--burst 1000"` (the issue's P2b burst).
bench: $(STAMP) system-deps
	$(BIN)/python -m bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) var dist build *.egg-info .pytest_cache .ruff_cache
