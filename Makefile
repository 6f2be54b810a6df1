# Two commands for a fresh machine: `make repro` (the whole study) and `make test`.
VENV   ?= .venv
PY     := $(VENV)/bin/python
BIN    := $(abspath $(VENV))/bin
STAMP  := $(VENV)/.installed

.PHONY: setup repro test lint bench clean

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

setup: $(STAMP)

repro: setup
	PATH=$(BIN):$$PATH dvc repro

test: setup lint
	PATH=$(BIN):$$PATH pytest -q -p no:cacheprovider $(PYTEST_ARGS)

lint: setup
	$(BIN)/ruff format --check --quiet .
	$(BIN)/ruff check --quiet .
	$(BIN)/mypy

bench: setup
	PATH=$(BIN):$$PATH $(PY) benchmarks/couple.py
	PATH=$(BIN):$$PATH $(PY) benchmarks/render.py

clean:
	rm -rf outputs .otpc_cache mlflow.db mlartifacts
