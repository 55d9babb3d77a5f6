# Two commands do everything: `make demo` and `make test`. Each creates .venv itself.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip install --quiet --disable-pip-version-check

.PHONY: demo test bench clean help report-screenshot

help:  ## List the targets.
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed-local: pyproject.toml | $(BIN)/python
	$(PIP) -e '.[local]'
	@touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(PIP) -e '.[dev]'
	@touch $@ $(VENV)/.installed-local

demo: $(VENV)/.installed-local  ## Generate events, run the job locally, show the segments.
	$(BIN)/segments demo

test: $(VENV)/.installed-dev  ## Run the test suite.
	$(BIN)/python -m pytest

bench: $(VENV)/.installed-dev  ## Run the throughput benchmark (minutes; see benchmarks/README.md).
	$(BIN)/python -m benchmarks.throughput

CHROMIUM ?= $(shell command -v chromium || command -v chromium-browser || command -v google-chrome)

report-screenshot:  ## Redraw docs/report.png from the demo's report (run `make demo` first; needs Debian's chromium).
	@test -f .work/demo/report.html || { echo "no .work/demo/report.html: run make demo first"; exit 2; }
	@test -n "$(CHROMIUM)" || { echo "no chromium: apt-get install chromium"; exit 2; }
	$(CHROMIUM) --headless --no-sandbox --disable-gpu --hide-scrollbars --window-size=1280,2200 \
		--screenshot=docs/report.png file://$(CURDIR)/.work/demo/report.html

clean:  ## Remove the virtualenv and local run data.
	rm -rf $(VENV) .work
