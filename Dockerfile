# The pipeline's one container image: every Kubeflow / Vertex component runs in it (`image:` in
# the pipeline configuration), and so do the Beam workers (`--sdk_container_image`). Build it with
# `make image`; docs/pipeline.md has the build, push and run commands.
#
# It installs exactly what `make` installs, by running the same recipe (requirements/install.sh:
# one pinned uv, requirements/lock.txt, requirements/nodeps.txt, then musicrec, here not
# editable); tests/test_image.py checks that the two stay the same.

# setup.py's Python, and the Beam that requirements/lock.txt pins: the workers' entrypoint must
# come from the same Beam release as the SDK the lock installs (tests/test_image.py checks both).
ARG PYTHON_VERSION=3.10
ARG BEAM_VERSION=2.59.0

# The lock is compiled for x86_64 (its header), so the image is amd64 wherever it is built.
FROM --platform=linux/amd64 apache/beam_python${PYTHON_VERSION}_sdk:${BEAM_VERSION} AS beam

# Two packages of the lock (crcmod, pyfarmhash) have no wheel: the compiler stays in this stage.
FROM --platform=linux/amd64 python:${PYTHON_VERSION}-slim AS build
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*
ENV PIP_NO_CACHE_DIR=1 UV_NO_CACHE=1
WORKDIR /src
# The dependencies first, in their own layer: a code change does not reinstall them.
COPY requirements/ requirements/
RUN requirements/install.sh dependencies python
COPY . .
RUN requirements/install.sh package python

FROM --platform=linux/amd64 python:${PYTHON_VERSION}-slim
# The official Python images install Python, and so everything installed above, under /usr/local.
COPY --from=build /usr/local /usr/local
COPY --from=beam /opt/apache/beam /opt/apache/beam
# Dataflow starts each worker through Beam's boot entrypoint; Kubeflow and Vertex give every
# component its own command. The working directory stays /, where no source tree can shadow the
# installed package.
ENTRYPOINT ["/opt/apache/beam/boot"]
