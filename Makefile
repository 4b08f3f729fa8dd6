# leansip developer commands.
#   make run    demo server: stateful proxy + registrar on udp:127.0.0.1:5060 (or a free port it prints)
#   make test   ruff and mypy, a check that the core runs compiled, then the whole pytest suite
#   make lint | make bench | make soak | make clean
#   make browser-deps   JsSIP for the browser-phone tests (npm ci + esbuild, tests/browser/dist/jssip.js)
# Everything runs from ./.venv, created on first use; `pip install -e` is redone only when
# pyproject.toml is newer than the stamp file, so repeated runs start immediately.

SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 2>/dev/null || command -v python3 2>/dev/null)
VENV := .venv
VPY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test
# The core modules mypyc compiles (leansip/_build.py); editing one makes `make` recompile them.
BUILD_STAMP := $(VENV)/.compiled
CORE_SOURCES := $(wildcard leansip/sip/*.py leansip/server/*.py leansip/server/stores/*.py) leansip/io/udpserver.py \
  leansip/io/bareloop.py \
  setup.py leansip/_build.py
VENV_HINT := On Debian/Ubuntu run: apt-get install -y python3-venv

.PHONY: run test lint bench soak build clean venv browser-deps

run: $(STAMP) $(BUILD_STAMP)
	$(VENV)/bin/leansip serve --demo $(ARGS)

# The suite runs on the compiled core; the unit tests run once more on the pure-Python modules
# (LEANSIP_PURE=1), so both builds of the same source stay correct.
test: $(TEST_STAMP) $(BUILD_STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	@# fails when a C compiler is here and the core still runs (partly) pure Python: see leansip/_build.py
	@$(VPY) -c 'import sys, leansip._build as b; sys.exit(b.main())'
	$(VPY) -m pytest -q
	LEANSIP_PURE=1 $(VPY) -m pytest -q -p no:cacheprovider tests/unit

build: $(BUILD_STAMP)

# mypy: strict on the protocol core, the default checks elsewhere (config in pyproject.toml)
lint: $(TEST_STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

bench: $(STAMP) $(BUILD_STAMP)
	bash bench/run.sh

# Memory under a hostile flood (issue 23): ~10 minutes of a core; writes bench/soak.md and bench/plots/soak-rss.png
soak: $(STAMP) $(BUILD_STAMP)
	$(VPY) bench/soak.py --publish $(ARGS)

venv: $(VPY)

$(VPY):
	@test -n "$(PYTHON)" || { echo "error: python3 not found; install Python 3.11 or newer" >&2; exit 1; }
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
	  || { echo "error: $(PYTHON) is older than Python 3.11" >&2; exit 1; }
	@$(PYTHON) -c 'import venv, ensurepip' 2>/dev/null || [ "$$(id -u)" != 0 ] || ! command -v apt-get >/dev/null \
	  || { echo "make: installing python3-venv (Debian's python3 has no ensurepip without it)"; \
	       apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null; }
	@$(PYTHON) -c 'import venv, ensurepip' 2>/dev/null \
	  || { echo "error: $(PYTHON) cannot create a virtualenv (venv/ensurepip missing). $(VENV_HINT)" >&2; exit 1; }
	@$(PYTHON) -m venv $(VENV) \
	  || { rm -rf $(VENV); echo "error: creating $(VENV) failed. $(VENV_HINT)" >&2; exit 1; }

$(STAMP): pyproject.toml | $(VPY)
	$(VPY) -m pip install -q -e .
	@touch $@ $(BUILD_STAMP)

# Recompile the core in place after an edit (about a minute; pip builds it in an isolated env with mypyc).
$(BUILD_STAMP): $(CORE_SOURCES) | $(VPY)
	$(VPY) -m pip install -q --no-deps -e .
	@touch $@

# The test extra is a superset, so it also satisfies `make run`.
$(TEST_STAMP): pyproject.toml | $(VPY)
	$(VPY) -m pip install -q -e '.[test]'
	@touch $@ $(STAMP) $(BUILD_STAMP)

# The browser phones' JsSIP (tests/integration/browser_kit.py): the npm packages pinned in package-lock.json,
# bundled into one script the test page loads from disk (no network when the tests run).
BROWSER := tests/browser
browser-deps: $(BROWSER)/dist/jssip.js

$(BROWSER)/dist/jssip.js: $(BROWSER)/package.json $(BROWSER)/package-lock.json
	cd $(BROWSER) && npm ci --no-audit --no-fund --loglevel=error
	cd $(BROWSER) && node_modules/.bin/esbuild node_modules/jssip/lib/JsSIP.js --bundle --format=iife \
	  --global-name=JsSIP --platform=browser --target=chrome100 --outfile=dist/jssip.js --log-level=warning

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .ruff_cache .mypy_cache .hypothesis test-output \
	  leansip/_compiled.json leansip_core__mypyc*.so $(BROWSER)/node_modules $(BROWSER)/dist
	find leansip -name '*.so' -delete
	find leansip tests -name __pycache__ -type d -prune -exec rm -rf {} +
