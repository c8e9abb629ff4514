# Two commands for a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test install lint validate bench clean chromium

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# Reinstall whenever pyproject.toml changes, so a missing dependency never hides behind an old venv.
# Then compile Google's SQL analyzer once into wasmtime's cache: `convergence validate` loads it in ~2 s.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[dev]'
	$(BIN)/python -c 'from convergence.warehouse.googlesql import GoogleSql; GoogleSql.shared()'
	touch $(STAMP)

install: $(STAMP)

# Debian's chromium for the console's browser tests: installed only when missing and only as root (apt);
# elsewhere, or if apt fails, those tests skip and say why.
chromium:
	@if command -v chromium >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing chromium (Debian package) for the browser tests"; \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
			|| echo "chromium install failed: the browser tests will skip"; \
	else echo "chromium missing and not root: the browser tests will skip"; fi

run: install
	$(BIN)/convergence dev demo

test: install chromium
	$(BIN)/ruff check --no-cache .
	$(BIN)/convergence validate
	$(BIN)/pytest -q

lint: install
	$(BIN)/ruff check --no-cache .
	$(BIN)/ruff format --check .

validate: install
	$(BIN)/convergence validate

bench: install
	$(BIN)/python bench/executor.py

clean:
	rm -rf $(VENV) .state .pytest_cache
