# curate: the two commands a new user needs are `make ingest` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# CPU build by default (fast, on disk here). With a GPU: make venv TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128"
TORCH_SPEC ?= torch==2.13.0
LS_VENV := .ls-venv
LS_STAMP := $(LS_VENV)/.installed
LS_VERSION := 1.23.2

SOURCE ?=
DOMAIN ?= customer_service
TEXT ?=
LABEL ?=
ID ?=
GROUP ?=
PYTEST_ARGS ?=

.PHONY: help venv ingest test test-fast lint bench labelstudio labelstudio-stop nightly clean

help:
	@echo "make ingest     ingest the built-in sample data into ./.curate/curate.db (SQLite) and print the summary"
	@echo "make ingest SOURCE=file.csv DOMAIN=financial [TEXT=col LABEL=col ID=col GROUP=col]"
	@echo "make test       create the venv if missing and run the whole test suite"
	@echo "make bench      run the benchmarks (results in benchmarks/results/)"
	@echo "make lint       ruff + mypy"
	@echo "make labelstudio / make labelstudio-stop   a local Label Studio server"

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip wheel setuptools
	$(BIN)/python -m pip install -q $(TORCH_SPEC)
	$(BIN)/python -m pip install -q -e '.[dev]'
	@touch $(STAMP)

venv: $(STAMP)

$(LS_STAMP):
	@test -x $(LS_VENV)/bin/python || $(PYTHON) -m venv $(LS_VENV)
	$(LS_VENV)/bin/python -m pip install -q label-studio==$(LS_VERSION)
	@touch $(LS_STAMP)

ingest: $(STAMP)
ifeq ($(SOURCE),)
	$(BIN)/curate ingest pipelines/sample_data/customer_service.csv --domain customer_service \
		--text-column text --label-column intent --id-column ticket_id --group-column customer
	$(BIN)/curate ingest pipelines/sample_data/financial.jsonl --domain financial \
		--text-column headline --label-column sentiment --id-column id --group-column company
	$(BIN)/curate status
else
	$(BIN)/curate ingest $(SOURCE) --domain $(DOMAIN) $(if $(TEXT),--text-column $(TEXT)) \
		$(if $(LABEL),--label-column $(LABEL)) $(if $(ID),--id-column $(ID)) $(if $(GROUP),--group-column $(GROUP))
	$(BIN)/curate status
endif

test: $(STAMP) $(LS_STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not integration and not slow and not browser" $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check curation pipelines store tests benchmarks
	$(BIN)/mypy curation pipelines store

bench: $(STAMP) $(LS_STAMP)
	$(BIN)/python -m benchmarks.run

labelstudio: $(STAMP) $(LS_STAMP)
	$(BIN)/python -m pipelines.ls_server start

labelstudio-stop: $(STAMP)
	$(BIN)/python -m pipelines.ls_server stop

nightly: $(STAMP)
	$(BIN)/curate nightly

clean:
	rm -rf .curate .pytest_cache .mypy_cache .ruff_cache
