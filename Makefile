# The README's two commands: `make run` and `make test`. Each does its own set-up.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
# The source tree keeps its data in ./var (an installed service uses MLEG_VAR_DIR, systemd's
# STATE_DIRECTORY or the user's data directory); a value set by the caller wins.
export MLEG_VAR_DIR ?= $(CURDIR)/var
# Some machines set PYTHONDONTWRITEBYTECODE; the tests would then compile and assert-rewrite every
# module again on each run and in each worker (collection 12 s instead of 6 s).
unexport PYTHONDONTWRITEBYTECODE

.PHONY: run test test-fast lint bench system-deps smoke clean screenshots

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

# The daily loop: SQLite only, in-process: without the slow fault runs and the tests that start
# `mleg`, serve or the console as processes (marked `process`; a test that starts one unmarked
# fails). `make test` (what CI runs) stays the whole suite.
test-fast: $(STAMP) lint
	$(BIN)/pytest -q -n 2 --dist loadgroup -m "not postgres and not slow and not process"

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

# The console's pictures in docs/ (the README shows them), taken by the browser test; a plain
# test run keeps its pictures in its own temporary folder.
screenshots: $(STAMP) system-deps
	UPDATE_SCREENSHOTS=1 $(BIN)/pytest -q -p no:randomly tests/test_web_browser.py
