# The README's two commands: `make demo` and `make test`. Both build .venv on first use and
# skip the install when pyproject.toml has not changed since (the stamp file).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test browser lint typecheck bench clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e ".[dev]"
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/rayline doctor
	$(BIN)/rayline run examples/taxi.yaml
	$(BIN)/rayline run examples/mnist.yaml
	$(BIN)/rayline runs list
	@echo "serve them: $(BIN)/rayline serve examples/taxi.yaml --model best   (then open http://127.0.0.1:8000/ to try it, /docs for the API)"
	@echo "            $(BIN)/rayline serve examples/mnist.yaml --model best --port 8001"

test: $(STAMP) browser
	$(BIN)/python -m pytest

# The browser tests drive Debian's Chromium (Playwright's own browser download needs a network).
# Installed when this runs as root with apt; otherwise those tests skip and say why.
browser:
	@command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null \
		&& apt-get install -y -q chromium >/dev/null 2>&1 || echo "chromium not installed: browser tests will skip"; }

lint: $(STAMP)
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests

typecheck: $(STAMP)
	$(BIN)/mypy src/rayline

clean:
	rm -rf .rayline .pytest_cache .mypy_cache .ruff_cache
