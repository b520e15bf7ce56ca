# Newcomer entry points: `make run` serves examples/, `make test` runs every check.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint typecheck unit bench proto clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/consent-sidecar serve --mappings examples/mappings.yaml --listen 127.0.0.1:50051

lint: $(STAMP)
	$(BIN)/ruff check sidecar clients tests bench gen/generate.py

typecheck: $(STAMP)
	$(BIN)/mypy sidecar clients/python/consent_client

# pytest exits 5 when it collects nothing: that is a failure here, not a pass.
unit: $(STAMP)
	@$(BIN)/pytest; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing" >&2; fi; exit $$rc

test: lint typecheck unit

bench: $(STAMP)
	$(BIN)/python -m bench

proto: $(STAMP)
	$(BIN)/python gen/generate.py

clean:
	rm -rf $(VENV) build dist *.egg-info
