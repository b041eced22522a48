# Each target installs what it needs first (scripts/setup.sh is idempotent; run as root on Debian).
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: setup demo test unit integration bench lint clean

setup:
	@bash scripts/setup.sh

demo: setup
	$(PY) -m edgectl.demo examples/edge-cloud.yaml

test: setup
	$(PY) -m pytest tests -q $(PYTEST_ARGS)

unit: setup
	$(PY) -m pytest tests -q -m "not integration" $(PYTEST_ARGS)

integration: setup
	$(PY) -m pytest tests -q -m integration $(PYTEST_ARGS)

bench: setup
	@set -e; for b in benchmarks/*.py; do echo "== $$b"; $(PY) $$b; done

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
