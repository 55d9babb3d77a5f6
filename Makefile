# Two commands do everything: `make demo` and `make test`. Each creates .venv itself,
# installing exactly the versions in locks/ (see "Dependencies" in README.md).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip --disable-pip-version-check
# The locking tool, itself pinned: `make lock` gives the same files on the same day.
UV_VERSION := 0.13.10
TOOLS  := .work/tools
UV     := $(TOOLS)/bin/uv
LATEST := .work/latest
# Extra pytest arguments: make test ARGS='tests/models -x'
ARGS   ?=

.PHONY: demo test test-latest lock bench clean help report-screenshot

help:  ## List the targets.
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# The lock installs every package (hashes checked, nothing resolved at install time);
# the project itself goes in editable, without its dependencies, built by the locked
# setuptools. The stamps depend on the locks, so a relock reinstalls.
define install_lock
	$(PIP) install --quiet --require-hashes --no-deps -r locks/$(1).txt
	$(PIP) install --quiet --no-deps --no-build-isolation -e .
	$(BIN)/python -m devtools.locks check-installed locks/$(1).txt
endef

$(VENV)/.installed-local: locks/local.txt pyproject.toml | $(BIN)/python
	$(call install_lock,local)
	@touch $@

# dev holds local at the same versions: it serves `make demo` too.
$(VENV)/.installed-dev: locks/dev.txt pyproject.toml | $(BIN)/python
	$(call install_lock,dev)
	@touch $@ $(VENV)/.installed-local

demo: $(VENV)/.installed-local  ## Generate events, run the job locally, show the segments.
	$(BIN)/segments demo

test: $(VENV)/.installed-dev  ## Run the test suite.
	$(BIN)/python -m pytest $(ARGS)

$(UV):
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/python -m pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)

lock: $(UV)  ## Regenerate locks/ at the newest versions pyproject.toml allows (run test-latest first).
	$(TOOLS)/bin/python -m devtools.locks compile --uv $(UV) --out locks

test-latest: $(UV)  ## Run the suite on the newest versions pyproject.toml allows; list what differs from the lock.
	$(TOOLS)/bin/python -m devtools.locks compile --uv $(UV) --out $(LATEST)/locks
	rm -rf $(LATEST)/venv && $(PYTHON) -m venv $(LATEST)/venv
	$(LATEST)/venv/bin/python -m pip install --quiet --disable-pip-version-check --require-hashes --no-deps -r $(LATEST)/locks/dev.txt
	$(LATEST)/venv/bin/python -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	$(TOOLS)/bin/python -m devtools.locks diff locks/dev.txt $(LATEST)/locks/dev.txt
	SEGMENTS_LOCK=$(LATEST)/locks/dev.txt $(LATEST)/venv/bin/python -m pytest -p no:cacheprovider $(ARGS); status=$$?; \
	  $(TOOLS)/bin/python -m devtools.locks diff locks/dev.txt $(LATEST)/locks/dev.txt; exit $$status

bench: $(VENV)/.installed-dev  ## Run the throughput benchmark (minutes; see benchmarks/README.md).
	$(BIN)/python -m benchmarks.throughput

CHROMIUM ?= $(shell command -v chromium || command -v chromium-browser || command -v google-chrome)

report-screenshot:  ## Redraw docs/report.png from the demo's report (run `make demo` first; needs Debian's chromium).
	@test -f .work/demo/report.html || { echo "no .work/demo/report.html: run make demo first"; exit 2; }
	@test -n "$(CHROMIUM)" || { echo "no chromium: apt-get install chromium"; exit 2; }
	$(CHROMIUM) --headless --no-sandbox --disable-gpu --hide-scrollbars --window-size=1280,2200 \
		--screenshot=docs/report.png file://$(CURDIR)/.work/demo/report.html

clean:  ## Remove the virtualenvs and local run data.
	rm -rf $(VENV) .work
