# Every target sets itself up on a fresh clone: it creates .venv and installs mailsift first.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

export UV_COMPILE_BYTECODE := 1
export DO_NOT_TRACK := 1
export GX_ANALYTICS_ENABLED := false
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS := 90

.PHONY: install test demo bench lint clean report-screenshot

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade uv
	$(BIN)/uv pip install --python $(BIN)/python --quiet -e '.[dev]'
	touch $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest

demo: $(STAMP)
	$(BIN)/mailsift demo

bench: $(STAMP)
	$(BIN)/python -m benchmarks

report-screenshot: $(STAMP)
	$(BIN)/python docs/make_report_screenshot.py

lint: $(STAMP)
	$(BIN)/ruff check mailsift pipeline flows tasks warehouse deployments service tests benchmarks examples/api

clean:
	rm -rf $(VENV) .pytest_cache demo-output mailsift-demo.duckdb
