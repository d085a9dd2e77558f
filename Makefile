# Quick start: `make demo` and `make test`. Each creates .venv when missing and installs what it needs.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
OUT    ?= demo_out

.PHONY: demo test venv clean bench

$(VENV)/.base: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -e .
	touch $@

$(VENV)/.test: $(VENV)/.base
	$(PIP) install --quiet -e '.[test]'
	touch $@

venv: $(VENV)/.base

demo: $(VENV)/.base
	$(VENV)/bin/broden build recipes/synthetic.yaml --out $(OUT)/store --workers 2
	$(VENV)/bin/broden validate $(OUT)/store
	$(VENV)/bin/broden stats $(OUT)/store

test: $(VENV)/.test
	$(PY) -m pytest -q -ra tests

bench: $(VENV)/.test
	$(PY) benches/run_all.py

clean:
	rm -rf $(OUT) .pytest_cache
