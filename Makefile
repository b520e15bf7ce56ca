# Newcomer entry points: `make run` serves examples/, `make test` runs every check.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint typecheck lint-deploy lint-proto unit docs bench proto dist clean

$(STAMP): pyproject.toml core/pyproject.toml clients/python/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ./core -e './clients/python[embedded]' -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/consent-sidecar serve --mappings examples/mappings.yaml --listen 127.0.0.1:50051

lint: $(STAMP)
	$(BIN)/ruff check consent_sidecar core clients tests bench docs

typecheck: $(STAMP)
	$(BIN)/mypy consent_sidecar core/consent_core clients/python/consent_client

# pytest exits 5 when it collects nothing: that is a failure here, not a pass.
unit: $(STAMP)
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

# docs/configuration.md is generated from the CLI's own flag definitions (a test compares).
docs: $(STAMP)
	$(BIN)/python docs/generate_config_reference.py

bench: $(STAMP)
	$(BIN)/python -m bench

proto: $(STAMP)
	$(BIN)/python clients/python/generate.py

# The three distributions of this repository: consent-core, consent-client, consent-sidecar.
dist: $(STAMP)
	rm -rf dist
	for d in core clients/python .; do $(BIN)/python -m build --wheel --no-isolation --outdir dist $$d || exit 1; done

clean:
	rm -rf $(VENV) build dist *.egg-info core/build core/*.egg-info clients/python/build clients/python/*.egg-info
