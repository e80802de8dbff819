# The hub's two commands. Both work on a fresh machine: they create .venv and install what is pinned.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint typecheck bench clean

$(STAMP): pyproject.toml requirements.lock
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	@$(BIN)/python -m pip install -q --upgrade pip uv==0.13.8
	@$(BIN)/uv pip install -q --python $(BIN)/python -r requirements.lock
	@$(BIN)/uv pip install -q --python $(BIN)/python --no-deps -e .
	@touch $(STAMP)

run: $(STAMP)  ## the whole hub on http://127.0.0.1:$${CRM_PORT:-8000}
	@exec $(BIN)/python -m crm.cli run all

test: $(STAMP)  ## the whole suite against real RabbitMQ, MongoDB-protocol server and Dovecot
	@bash scripts/test-services.sh
	$(BIN)/python -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check . && $(BIN)/ruff format --check . && $(BIN)/mypy

bench: $(STAMP)  ## performance harness (not part of make test): the targets beside the ceilings
	@command -v wrk >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk; }
	$(BIN)/python -m tests.perf.targets
	$(BIN)/python -m tests.perf.bench

clean:
	rm -rf $(VENV) .crm-data .pytest_cache .mypy_cache .ruff_cache
