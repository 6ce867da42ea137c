# Ferry — `make run` starts everything, `make test` passes the tests (and is what CI runs).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
MOTO_VENV := .venv-moto
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.DEFAULT_GOAL := help

help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml clients/python/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev,embedded]' -e clients/python
	touch $@

$(MOTO_VENV)/.installed:
	$(PYTHON) -m venv $(MOTO_VENV)
	$(MOTO_VENV)/bin/pip install --quiet 'moto[server]'
	touch $@

setup: $(STAMP) $(MOTO_VENV)/.installed ## create .venv (dev and embedded extras, the Python client) and .venv-moto (S3 tests)

run: $(STAMP) ## set up and start Ferry on its embedded defaults (or the FERRY_* servers)
	$(BIN)/ferry dev

lint: $(STAMP) ## ruff check and format check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP) ## mypy --strict on services/, the Python client and bench/
	$(BIN)/mypy services clients/python/src bench

# Coverage of the test process only (not of the `ferry` subprocesses some tests start);
# the summary lists the files under 90 % and the total.
test: setup lint typecheck ## set up, lint, type-check, run every test, print coverage (CI)
	$(BIN)/pytest -q --cov --cov-report=
	@$(BIN)/coverage report --sort=cover | awk 'NR <= 2 || /^TOTAL/ || $$NF + 0 < 90'

all: test ## the same as make test: what CI (.ci/run) runs

format: $(STAMP) ## apply ruff format and autofixes
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: setup ## run the benchmarks in bench/ (minutes; prints ratios against baselines)
	$(BIN)/python -m bench

clean: ## remove venvs and local state (.ferry, caches, coverage data)
	rm -rf $(VENV) $(MOTO_VENV) .ferry .mypy_cache .pytest_cache .ruff_cache .coverage

.PHONY: help setup run lint typecheck test all format bench clean
