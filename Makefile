# Developer and CI entry points. Works on a fresh clone: `make test` builds everything first.
#   make install      Python venv (.venv, pinned by constraints.txt) + Azurite (npm ci)
#                     + PostgreSQL/PostGIS server binaries when missing (.ci/postgis-deps.sh)
#   make test         pytest + ruff check + mypy
#   make lint         ruff check + mypy on the package
#   make demo         run the demo end to end
#   make bench        full benchmark; bench-quick: the short version
#   make conformance  zonal stats vs rasterstats/exactextract on ../shared/data -> docs/conformance.md

PYTHON ?= python3
VENV   ?= .venv
PIP_EXTRAS ?= test,bench,obstore,stac,postgis

PY   := $(VENV)/bin/python
RUFF := $(VENV)/bin/ruff

# Stamps record that an install step ran against the current pins; they are rebuilt when
# the files they depend on change (npm ci empties node_modules/, so its stamp lives there).
PY_STAMP  := $(VENV)/.parcelzarr-install.stamp
NPM_STAMP := node_modules/.parcelzarr-npm-ci.stamp

# PostgreSQL + PostGIS for the PostGIS tests: checked on every install (cheap), installed
# with apt-get when missing and root/sudo is available, else the script says how.
.PHONY: install postgis-deps demo test lint bench bench-quick conformance

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
	$(PY) -m pytest
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
