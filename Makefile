# The README's two commands: `make demo` and `make test`. Both build .venv on first use and
# skip the install when pyproject.toml has not changed since (the stamp file).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test lint typecheck bench clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e ".[dev]"
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/rayline doctor
	$(BIN)/rayline validate examples/taxi.yaml > /dev/null
	$(BIN)/rayline validate examples/mnist.yaml > /dev/null
	$(BIN)/rayline data taxi --rows 200000 --out .rayline/data/taxi-demo.parquet
	$(BIN)/rayline data mnist --out .rayline/data/mnist-demo --overwrite
	$(BIN)/rayline runs list

test: $(STAMP)
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests

typecheck: $(STAMP)
	$(BIN)/mypy src/rayline

clean:
	rm -rf .rayline .pytest_cache .mypy_cache .ruff_cache
