# Each target does its own set-up on a fresh machine: it creates .venv if
# missing and installs the project (editable) before running. `make run` and the
# operator targets install the runtime dependencies only; `make test`, `lint` and
# `format` add the test extras. Each install has its own stamp. After installing, each
# compiles the kernels of config.toml's runs once (`python -m engine warm-up`, a progress
# line while it works), so the first run is a warm start (README: Start-up).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
RUN_STAMP := $(VENV)/.installed-run
TEST_STAMP := $(VENV)/.installed-test

.PHONY: run test lint format bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(RUN_STAMP): pyproject.toml setup.py | $(PY)
	$(PY) -m pip install --quiet -e .
	$(PY) -m engine warm-up --config config.toml
	touch $@

# The test extras include the runtime dependencies: this satisfies `run` too.
$(TEST_STAMP): pyproject.toml setup.py | $(PY)
	$(PY) -m pip install --quiet -e '.[test]'
	$(PY) -m engine warm-up --config config.toml
	touch $@ $(RUN_STAMP)

run: $(RUN_STAMP)
	$(PY) -m engine --config config.toml

test: $(TEST_STAMP)
	$(PY) -m pytest

lint: $(TEST_STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(TEST_STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

bench: $(RUN_STAMP)
	$(PY) -m tools.bench replay

clean:
	rm -rf $(VENV) build logs runs .pytest_cache .ruff_cache

# Operator control of a running engine (needs control.socket in config.toml).
.PHONY: status halt resume
status halt resume: $(RUN_STAMP)
	$(PY) -m engine control $@ --config config.toml $(if $(REASON),--reason "$(REASON)")
