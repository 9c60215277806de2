# Two commands set everything up on a fresh machine with Python 3.11+ and make:
#   make run    create .venv, install, migrate, load the demo world, serve on http://127.0.0.1:8080 (with the
#               outside systems' sandboxes on ports 8701-8706)
#   make test   create .venv if needed, install, run the whole test suite
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.installed
NODE_STAMP = node_modules/.installed

.PHONY: run test install lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# the demo world's connectors call the outside systems' sandboxes: they run beside the service and stop with it
run: $(STAMP)
	$(BIN)/twincity db upgrade
	$(BIN)/twincity demo load
	$(BIN)/twincity sandbox all & trap 'kill $$! 2>/dev/null' EXIT INT TERM; $(BIN)/twincity run

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# the portal's ES modules are checked by eslint and prettier, installed from package-lock.json (Node.js 18+)
$(NODE_STAMP): package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $(NODE_STAMP)

lint: $(STAMP) $(NODE_STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	npm run --silent lint

clean:
	rm -rf $(VENV) var .pytest_cache .hypothesis node_modules
