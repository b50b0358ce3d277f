.DEFAULT_GOAL := help
SHELL := bash
.SHELLFLAGS := -euo pipefail -c
MAKEFLAGS += --no-print-directory

# uv installed by .ci/bootstrap lives here; pyenv (if any) must expose 3.11-3.13 to uv.
export PATH := $(HOME)/.local/bin:$(PATH)
PYENV_DETECTED := $(shell .ci/pyenv-versions)
ifneq ($(PYENV_DETECTED),)
export PYENV_VERSION ?= $(PYENV_DETECTED)
endif

UV ?= uv
DEMO ?= build/demo
PYTEST_ARGS ?=

.PHONY: help setup demo test test-fast lint docs docs-serve bench clean

help: ## List the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  \033[36m%-10s\033[0m %s\n", $$1, $$2}'

setup: ## Install system tools (apt), uv and the Python environment
	.ci/bootstrap
	$(UV) sync --frozen

demo: setup ## Generate build/demo (api-postgres preset) and run it on an embedded PostgreSQL
	test -d $(DEMO) || $(UV) run bulwark new $(DEMO) --preset api-postgres --defaults
	$(MAKE) -C $(DEMO) dev

test: setup ## Run every test: questions, generator, sample projects' checks, load tests
	$(UV) run pytest $(PYTEST_ARGS)

test-fast: setup ## Skip the slow tests (whole-sample checks, load tests)
	$(UV) run pytest -m "not slow" $(PYTEST_ARGS)

lint: setup ## ruff and mypy --strict on the generator and its tests
	$(UV) run ruff check .
	$(UV) run ruff format --check .
	$(UV) run mypy

# Material prints an end-of-life banner on every run; the build's own warnings are what count.
docs: setup ## Build the docs site into build/site (strict: a broken link or orphan page fails)
	NO_MKDOCS_2_WARNING=1 $(UV) run mkdocs build --strict

docs-serve: setup ## Serve the docs site at http://127.0.0.1:8000, rebuilt on every edit
	NO_MKDOCS_2_WARNING=1 $(UV) run mkdocs serve

# One wrk client is one address: the default per-client rate limit would answer 429s.
bench: setup ## Every load-test scenario on a full-preset sample, the routed request first; report in build/bench-report
	test -d build/bench || $(UV) run bulwark new build/bench --preset full --defaults
	flock /tmp/bulwark-load.lock $(UV) run bulwark loadtest build/bench --all --no-rate-limit --report build/bench-report

clean: ## Remove generated samples and caches
	rm -rf build .pytest_cache .mypy_cache .ruff_cache
