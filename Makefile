# Two entry points: `make demo` and `make test`. Everything else is a helper of those.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.nbmlops-installed

.PHONY: demo test test-fast lint format bench env system ui clean labextension

# The JupyterLab extension, built by jlpm (Node.js and the npm registry) from labextension/.
LABEXT_SRC := $(wildcard labextension/src/*.ts) $(wildcard labextension/style/*) \
	labextension/package.json labextension/yarn.lock labextension/schema/plugin.json
LABEXT_DIR := $(VENV)/share/jupyter/labextensions/nbmlops
LABEXT     := $(LABEXT_DIR)/package.json

env: $(STAMP) $(LABEXT)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	$(PY) -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (nbmlops)" >/dev/null
	touch $(STAMP)

# `pip install -e` above builds the extension once (hatch-jupyter-builder) and copies it into
# the venv; this rebuilds and re-copies it whenever its sources change after that.
labextension/node_modules/.yarn-state.yml: labextension/package.json labextension/yarn.lock | $(STAMP)
	cd labextension && PATH="$(CURDIR)/$(VENV)/bin:$$PATH" jlpm install --immutable
	touch $@

$(LABEXT): labextension/node_modules/.yarn-state.yml $(LABEXT_SRC)
	cd labextension && PATH="$(CURDIR)/$(VENV)/bin:$$PATH" jlpm build:prod
	rm -rf $(LABEXT_DIR)
	cp -r labextension/prebuilt $(LABEXT_DIR)
	cp labextension/install.json $(LABEXT_DIR)/install.json

labextension: $(LABEXT)

# Debian packages the test suite needs (PostgreSQL for the server lane).
system:
	bash scripts/install-system-deps.sh

demo: env
	$(PY) -m nbmlops.demo

test: env system
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src tests bench
	$(VENV)/bin/mypy
	cd labextension && PATH="$(CURDIR)/$(VENV)/bin:$$PATH" jlpm lint:check
	cd labextension && PATH="$(CURDIR)/$(VENV)/bin:$$PATH" jlpm test
	$(VENV)/bin/pytest -n 2 --durations=25

test-fast: env
	$(VENV)/bin/pytest -m "not kernel and not server and not slow"

lint: env
	$(VENV)/bin/ruff check src tests bench

format: env
	$(VENV)/bin/ruff format src tests bench
	$(VENV)/bin/ruff check --fix src tests bench

bench: env
	$(PY) bench/bench_track.py
	$(PY) bench/bench_data.py
	$(PY) bench/bench_serve.py
	$(PY) bench/bench_panels.py
	$(PY) bench/bench_pipeline.py

ui: env
	$(VENV)/bin/nbmlops ui

clean:
	rm -rf $(VENV) .nbmlops notebooks/out .pytest_cache .ruff_cache
	rm -rf labextension/node_modules labextension/lib labextension/prebuilt
