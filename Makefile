# Each target does its own set-up on a fresh machine: it creates .venv if
# missing and installs the project (editable) before running.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test lint format bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

run: $(STAMP)
	$(PY) -m engine --config config.toml

test: $(STAMP)
	$(PY) -m pytest

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

bench: $(STAMP)
	$(PY) -m tools.bench replay

clean:
	rm -rf $(VENV) logs runs .pytest_cache .ruff_cache

# Operator control of a running engine (needs control.socket in config.toml).
.PHONY: status halt resume
status halt resume: $(STAMP)
	$(PY) -m engine control $@ --config config.toml $(if $(REASON),--reason "$(REASON)")
