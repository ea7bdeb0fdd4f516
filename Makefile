# make demo: set up (if needed) and run the main job on the embedded default dataset.
# make test: set up (if needed) and run the test suite.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
UV := $(VENV)/bin/uv
UV_VERSION := 0.13.9
# python3.10 on PATH, else pyenv's 3.10 (TFX 1.16 needs Python 3.10).
PYTHON310 ?= $(shell python3.10 -c 'import sys' >/dev/null 2>&1 && echo python3.10 || ls -d $$HOME/.pyenv/versions/3.10.*/bin/python3.10 2>/dev/null | tail -n 1)
STAMP := $(VENV)/.installed
DATA ?= data/demo
RUN ?= runs/demo

.PHONY: setup demo test bench lock clean

setup: $(STAMP)

# Reinstall whenever the lock, the no-deps list or the package definition changes.
$(STAMP): requirements/lock.txt requirements/nodeps.txt setup.py
	@test -n "$(PYTHON310)" || { echo "Python 3.10 is required (TFX 1.16): install python3.10 or pyenv 3.10" >&2; exit 1; }
	@test -x $(PY) || $(PYTHON310) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check uv==$(UV_VERSION)
	$(UV) pip install -q --python $(PY) -r requirements/lock.txt
	$(UV) pip install -q --python $(PY) --no-deps -r requirements/nodeps.txt
	$(UV) pip install -q --python $(PY) --no-deps -e .
	@touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/musicrec demo --dataset $(DATA) --run-dir $(RUN)

test: $(STAMP)
	$(PY) -m pytest

bench: $(STAMP)
	$(PY) benchmarks/frontend.py --out reports/benchmarks/frontend.json
	$(PY) benchmarks/audio_training.py --out reports/benchmarks/audio_training.json
	$(PY) benchmarks/serving.py --out reports/benchmarks/serving.json

# Recompile the lock from requirements/base.in (needs network access to PyPI).
lock: $(STAMP)
	$(UV) pip compile -q requirements/base.in -o requirements/lock.txt --python-version 3.10 --python-platform x86_64-manylinux_2_28

clean:
	rm -rf $(VENV) data runs reports .pytest_cache
