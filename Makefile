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
	@echo "serve taxi: $(BIN)/rayline serve examples/taxi.yaml --model best --port 8001"
	@# In a terminal the demo ends by serving the digit model (draw one at the page); run
	@# non-interactively (CI, scripts) it prints the command instead of blocking.
	@if [ -t 0 ] && [ -t 1 ]; then \
		echo "serving mnist: open http://127.0.0.1:8000/ to draw a digit, /docs for the API; Ctrl-C stops"; \
		$(BIN)/rayline serve examples/mnist.yaml --model best; \
	else \
		echo "serve mnist: $(BIN)/rayline serve examples/mnist.yaml --model best   (then open http://127.0.0.1:8000/)"; \
	fi

# Two pytest workers (pytest-xdist), each running whole files so that a module's service or
# trained run is set up once (tests/conftest.py keeps the cluster tests in one worker): on 2 cores
# the suite waits on Ray's and Serve's start-ups a third of the time when run one test at a time.
TEST_WORKERS ?= 2

test: $(STAMP) browser
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

# The browser tests drive Debian's Chromium (Playwright's own browser download needs a network).
# Installed when this runs as root with apt; otherwise those tests skip and say why.
browser:
	@command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null \
		&& apt-get install -y -q chromium >/dev/null 2>&1 || echo "chromium not installed: browser tests will skip"; }

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks examples
	$(BIN)/ruff format --check src tests benchmarks examples
	$(BIN)/lint-imports

typecheck: $(STAMP)
	$(BIN)/mypy src/rayline

clean:
	rm -rf .rayline .pytest_cache .mypy_cache .ruff_cache
