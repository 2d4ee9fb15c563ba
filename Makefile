# sourceflow — every command builds and uses the project's own .venv with pinned versions.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: install demo up test test-unit test-contract test-e2e lint typecheck clean

install: $(STAMP)

$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $(STAMP)

demo: install
	$(BIN)/sourceflow demo

up: install
	$(BIN)/sourceflow up

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install
	$(BIN)/mypy shared services infra tests

test: lint typecheck
	$(BIN)/pytest -q --basetemp=$(CURDIR)/.pytest-tmp

test-unit: install
	$(BIN)/pytest -q tests/unit

test-contract: install
	$(BIN)/pytest -q tests/contract

test-e2e: install
	$(BIN)/pytest -q tests/e2e

clean:
	rm -rf $(VENV) .sourceflow
