# debond: set-up, demo, tests and benchmarks.
# `make venv` creates .venv with the pinned dependencies (constraints.txt); it
# is idempotent and redone only when pyproject.toml or constraints.txt change.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PIP_VERSION := 26.0.1
PYTEST_ARGS ?=
DEMO_DIR ?= demo

.PHONY: venv demo test test-all lint bench lock clean

venv: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check pip==$(PIP_VERSION)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check \
		-c constraints.txt -e . --group dev
	touch $@

demo: venv
	$(BIN)/debond demo $(DEMO_DIR)

# Default run: everything but the `slow` marker (under 15 minutes on 2 cores).
test: venv lint
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

# Everything, the `slow` cases included (CI runs this too).
test-all: venv lint
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

bench: venv
	$(BIN)/python benchmarks/run.py

# Re-resolve the pinned versions (needs the package registry).
lock:
	rm -rf .lock-venv && $(PYTHON) -m venv .lock-venv
	.lock-venv/bin/python -m pip install --quiet pip==$(PIP_VERSION)
	.lock-venv/bin/python -m pip install --quiet -e . --group dev
	.lock-venv/bin/python -m pip freeze --exclude-editable | sort > constraints.txt
	rm -rf .lock-venv

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
