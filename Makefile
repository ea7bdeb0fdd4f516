# make demo: set up (if needed) and run the main job on the embedded default dataset.
# make test: set up (if needed) and run the test suite.
# make image [IMAGE=REGISTRY/musicrec:TAG]: the container image of Kubeflow / Vertex and the Beam workers.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
UV := $(VENV)/bin/uv
# python3.10 on PATH, else pyenv's 3.10 (TFX 1.16 needs Python 3.10).
PYTHON310 ?= $(shell python3.10 -c 'import sys' >/dev/null 2>&1 && echo python3.10 || ls -d $$HOME/.pyenv/versions/3.10.*/bin/python3.10 2>/dev/null | tail -n 1)
STAMP := $(VENV)/.installed
DATA ?= data/demo
RUN ?= runs/demo

# The image's tag: the commit it is built from (-dirty with uncommitted changes).
IMAGE ?= musicrec:$(shell git describe --always --dirty 2>/dev/null || echo latest)

.PHONY: setup demo test bench lock clean image push-image docker-daemon

setup: $(STAMP)

# Reinstall whenever the lock, the no-deps list, the install recipe or the package definition
# changes. The recipe (one pinned uv, the lock, the no-deps list, the package) is
# requirements/install.sh, which the Dockerfile runs too.
$(STAMP): requirements/lock.txt requirements/nodeps.txt requirements/install.sh setup.py
	@test -n "$(PYTHON310)" || { echo "Python 3.10 is required (TFX 1.16): install python3.10 or pyenv 3.10" >&2; exit 1; }
	@test -x $(PY) || $(PYTHON310) -m venv $(VENV)
	requirements/install.sh dependencies $(PY)
	requirements/install.sh package $(PY) --editable
	@touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/musicrec demo --dataset $(DATA) --run-dir $(RUN)

test: $(STAMP)
	$(PY) -m pytest

bench: $(STAMP)
	$(PY) benchmarks/frontend.py --out reports/benchmarks/frontend.json
	$(PY) benchmarks/audio_training.py --out reports/benchmarks/audio_training.json
	$(PY) benchmarks/serving.py --out reports/benchmarks/serving.json
	$(PY) benchmarks/release.py --out reports/benchmarks/release.json
	$(PY) benchmarks/scale.py --out reports/benchmarks/scale.json

# Recompile the lock from requirements/base.in (needs network access to PyPI).
lock: $(STAMP)
	$(UV) pip compile -q requirements/base.in -o requirements/lock.txt --python-version 3.10 --python-platform x86_64-manylinux_2_28

# The one container image (Dockerfile): Kubeflow / Vertex components and Beam workers run in it.
image: docker-daemon
	docker build -t $(IMAGE) .

push-image: image
	docker push $(IMAGE)

docker-daemon:
	@docker info >/dev/null 2>&1 || { echo "make image needs a Docker daemon, and 'docker info' reaches none (is Docker installed and running? DOCKER_HOST?). Without one, build the Dockerfile remotely, e.g. gcloud builds submit --tag $(IMAGE) ." >&2; exit 1; }

clean:
	rm -rf $(VENV) data runs reports .pytest_cache
