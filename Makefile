# Newcomer entry points: `make run` serves examples/, `make test` runs every check.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# test-fast: the pure and in-process tests (markers in tests/conftest.py), for the edit-test loop.
.PHONY: run test test-fast lint typecheck lint-deploy lint-proto unit browser h2load docs bench proto dist clean

# core/csrc/: the editable install compiles consent-core's C accelerator in place.
$(STAMP): pyproject.toml core/pyproject.toml core/setup.py $(wildcard core/csrc/*.c core/csrc/*.h) clients/python/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ./core -e './clients/python[embedded]' -e '.[dev]'
	touch $(STAMP)

# The audit trail goes to var/ (ignored by git), never beside the examples.
run: $(STAMP)
	mkdir -p var
	$(BIN)/consent-sidecar serve --mappings examples/mappings.yaml --listen 127.0.0.1:50051 --audit-db var/audit.db

lint: $(STAMP)
	$(BIN)/ruff check consent_sidecar core clients tests bench docs

typecheck: $(STAMP)
	$(BIN)/mypy consent_sidecar core/consent_core clients/python/consent_client

# The console's browser tests drive Debian's Chromium and ChromeDriver (nothing is downloaded at
# test time). As root with apt (these machines, CI) they are installed when missing; anywhere
# else this fails with the one command to run.
browser:
	@if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "installing chromium and chromium-driver for the console's browser tests"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; \
	else \
	  echo "the console's browser tests need Debian's chromium and chromium-driver: run  sudo apt-get install -y chromium chromium-driver" >&2; \
	  exit 1; \
	fi

# bench workers drives its load with h2load (Debian's nghttp2-client) when it is there, and the
# test of that row runs it; as root with apt it is installed, anywhere else the test says it skipped.
h2load:
	@if command -v h2load >/dev/null 2>&1; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "installing nghttp2-client (h2load) for the workers benchmark's test"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nghttp2-client >/dev/null; \
	else \
	  echo "h2load not installed (sudo apt-get install -y nghttp2-client): its workers-benchmark test will skip" >&2; \
	fi

# pytest exits 5 when it collects nothing: that is a failure here, not a pass.
unit: $(STAMP) browser h2load
	@$(BIN)/pytest; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing" >&2; fi; exit $$rc

# The image and the manifests, without a container engine or a cluster: hadolint (pinned in
# pyproject.toml), yamllint (.yamllint), and every deploy/kubernetes resource against the
# Kubernetes JSON schemas that kubernetes-validate ships (offline, strict: unknown fields fail)
# for the oldest version the manifests support (native sidecar containers) and the newest known.
# The kustomizations and the overlays' patches (*.patch.yaml) have no schema there: tests/test_deploy.py checks them.
K8S_VERSIONS := 1.29.0 1.37.0
K8S_MANIFESTS := $(filter-out %/kustomization.yaml %.patch.yaml,$(wildcard deploy/kubernetes/*.yaml deploy/kubernetes/overlays/*/*.yaml))

lint-deploy: $(STAMP)
	$(BIN)/hadolint --failure-threshold style Dockerfile
	$(BIN)/yamllint --strict .
	@for v in $(K8S_VERSIONS); do \
	  echo "kubernetes-validate --strict -k $$v $(K8S_MANIFESTS)"; \
	  $(BIN)/kubernetes-validate --strict --quiet -k $$v $(K8S_MANIFESTS) || exit 1; \
	done

# The wire contract: buf lint (STANDARD but the three AIP-style waivers in buf.yaml) and buf
# breaking (FILE rules) against the 0.1 protos, kept as a buf image since a clone may have no tags.
PROTO_BASELINE := proto/baseline/consent-v0.1.binpb

lint-proto: $(STAMP)
	$(BIN)/buf lint
	$(BIN)/buf breaking --against $(PROTO_BASELINE)

test: lint typecheck lint-deploy lint-proto unit

# test-fast spreads over every core (pytest-xdist): each test takes free ports and its own tmp_path.
test-fast: $(STAMP)
	@$(BIN)/pytest -q -n auto -m "not slow and not integration"; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing" >&2; fi; exit $$rc

# docs/configuration.md is generated from the CLI's own flag definitions (a test compares).
docs: $(STAMP)
	$(BIN)/python docs/generate_config_reference.py

bench: $(STAMP)
	$(BIN)/python -m bench

proto: $(STAMP)
	$(BIN)/python clients/python/generate.py

# The three distributions of this repository: consent-core, consent-client, consent-sidecar.
# setuptools builds in each project's build/ directory: cleaned first, so a module moved or
# deleted since the last build can never reach a wheel.
dist: $(STAMP)
	rm -rf dist build core/build clients/python/build
	$(BIN)/python -m pip wheel --quiet --no-deps --no-build-isolation --wheel-dir dist ./core ./clients/python .

clean:
	rm -rf $(VENV) build dist *.egg-info core/build core/*.egg-info core/consent_core/*.so clients/python/build clients/python/*.egg-info
