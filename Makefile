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
	$(BIN)/rayline train examples/taxi.yaml
	$(BIN)/rayline tune examples/taxi.yaml
	$(BIN)/rayline predict examples/taxi.yaml --model best
	$(BIN)/rayline evaluate examples/taxi.yaml --model best
	$(BIN)/rayline runs list --spec taxi
	$(BIN)/rayline train examples/mnist.yaml
	$(BIN)/rayline tune examples/mnist.yaml
	$(BIN)/rayline predict examples/mnist.yaml --model best
	$(BIN)/rayline evaluate examples/mnist.yaml --model best
	$(BIN)/rayline runs list --spec mnist
	@echo "serve them: $(BIN)/rayline serve examples/taxi.yaml --model best   (then open http://127.0.0.1:8000/docs)"
	@echo "            $(BIN)/rayline serve examples/mnist.yaml --model best --port 8001"

test: $(STAMP)
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests

typecheck: $(STAMP)
	$(BIN)/mypy src/rayline

clean:
	rm -rf .rayline .pytest_cache .mypy_cache .ruff_cache
