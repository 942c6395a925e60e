# Two entry points for a fresh machine: `make run` and `make test`.
# Each sets up what it needs: a virtual environment, torch==2.13.0 (CPU build) before
# anything else, then the project and its test tools.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint format bench clean .system-deps .test-deps

# Debian packages: espeak-ng synthesises the corpus's speech; chromium drives the web page's
# browser test (tests only).
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
.system-deps:
	@command -v espeak-ng >/dev/null || { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq espeak-ng; }
	@command -v espeak-ng >/dev/null || { echo "espeak-ng is required: apt-get install espeak-ng"; exit 1; }

.test-deps: .system-deps
	@command -v chromium >/dev/null || { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq chromium; }
	@command -v chromium >/dev/null || { echo "chromium is required for the web test: apt-get install chromium"; exit 1; }

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# torch first: pinning it before the rest keeps pip from pulling a multi-GB CUDA build.
$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

# The default model (shipped in omniflex/assets/models/tiny) behind the OpenAI REST and Realtime
# APIs, with the voice page at http://127.0.0.1:8000/ (Ctrl-C stops it).
run: $(STAMP) .system-deps
	$(BIN)/omniflex serve --model tiny --host 127.0.0.1 --port 8000 --compile

test: $(STAMP) .test-deps
	$(BIN)/ruff check omniflex tests
	$(BIN)/ruff format --check omniflex tests
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check --fix omniflex tests
	$(BIN)/ruff format omniflex tests

bench: $(STAMP)
	$(BIN)/pip install --quiet -e '.[bench]'
	$(BIN)/omniflex bench flex --json
	$(BIN)/omniflex bench model
	$(BIN)/omniflex bench realtime --json

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
