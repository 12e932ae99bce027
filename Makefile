# Developer and CI entry points. Works on a fresh clone: `make test` builds everything first.
#   make install      Python venv (.venv, pinned by constraints.txt) + Azurite (npm ci)
#                     + PostgreSQL/PostGIS server binaries when missing (.ci/postgis-deps.sh)
#   make test         pytest + ruff check + mypy
#   make lint         ruff check + mypy on the package
#   make demo         run the demo end to end
#   make bench        full benchmark; bench-quick: the short version
#   make test-newest-zarr  the suite against the newest zarr, in a throwaway venv (not CI)
#   make conformance  zonal stats vs rasterstats/exactextract on ../shared/data -> docs/conformance.md

PYTHON ?= python3
VENV   ?= .venv
PIP_EXTRAS ?= test,bench,obstore,stac,postgis

# pytest-xdist: one worker per core, a test file per worker (module fixtures stay shared;
# each worker starts its own Azurite on a free port). `make test PYTEST_ARGS=` runs serially.
PYTEST_ARGS ?= -n auto --dist loadfile

PY   := $(VENV)/bin/python
RUFF := $(VENV)/bin/ruff

# Stamps record that an install step ran against the current pins; they are rebuilt when
# the files they depend on change (npm ci empties node_modules/, so its stamp lives there).
PY_STAMP  := $(VENV)/.parcelzarr-install.stamp
NPM_STAMP := node_modules/.parcelzarr-npm-ci.stamp

.PHONY: install postgis-deps demo test lint bench bench-quick conformance test-newest-zarr

install: $(PY_STAMP) $(NPM_STAMP) postgis-deps

postgis-deps:
	bash .ci/postgis-deps.sh

$(PY):
	$(PYTHON) -m venv $(VENV)

$(PY_STAMP): $(PY) pyproject.toml constraints.txt
	$(PY) -m pip install --quiet -c constraints.txt -e '.[$(PIP_EXTRAS)]'
	touch $@

$(NPM_STAMP): package.json package-lock.json
	npm ci --no-audit --no-fund
	touch $@

demo: install
	$(VENV)/bin/parcelzarr demo

test: install
	$(PY) -m pytest $(PYTEST_ARGS)
	$(RUFF) check .
	$(VENV)/bin/mypy src ingest query stores

lint: install
	$(RUFF) check .
	$(VENV)/bin/mypy src ingest query stores

bench: install
	$(PY) bench/run.py

bench-quick: install
	$(PY) bench/run.py --quick

# Writes the table even when cases fail (it lists them); exits non-zero then.
conformance: install
	$(PY) -m pytest tests/test_conformance.py -q -p no:cacheprovider \
		--conformance-doc docs/conformance.md

# The suite against the newest zarr release (above pyproject's bound, which it checks before
# the bound is raised): a throwaway venv with every other package as pinned. zarr >= 3.2
# needs Python >= 3.12: `make test-newest-zarr NEWEST_ZARR_PYTHON=python3.12`.
NEWEST_ZARR_VENV ?= .venv-newest-zarr
NEWEST_ZARR_PYTHON ?= $(PYTHON)
test-newest-zarr: $(NPM_STAMP)
	rm -rf $(NEWEST_ZARR_VENV)
	$(NEWEST_ZARR_PYTHON) -m venv $(NEWEST_ZARR_VENV)
	grep -v '^zarr==' constraints.txt > $(NEWEST_ZARR_VENV)/constraints.txt
	$(NEWEST_ZARR_VENV)/bin/python -m pip install --quiet -c $(NEWEST_ZARR_VENV)/constraints.txt \
		-e '.[$(PIP_EXTRAS)]'
	$(NEWEST_ZARR_VENV)/bin/python -m pip install --quiet --upgrade zarr
	$(NEWEST_ZARR_VENV)/bin/python -c "import zarr; print('zarr', zarr.__version__)"
	$(NEWEST_ZARR_VENV)/bin/python -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)
