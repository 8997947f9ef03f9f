# syntax=docker/dockerfile:1
# The one image every carbonpipe KFP component runs in. Tag it with the package version, the
# tag components/_image.py names (carbonpipe.__version__ is the one place it is written):
#
#   docker build -t "ghcr.io/carbonpipe/carbonpipe:$(python -c 'import carbonpipe; print(carbonpipe.__version__)')" .
#
# KFP replaces the entrypoint with each component's command (python3 -m kfp.dsl.executor_main,
# or python -m carbonpipe.integrations.kfp.command); `docker run IMAGE detect` runs the CLI.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY carbonpipe/ carbonpipe/
COPY components/ components/
COPY operators/ operators/
COPY pipelines/ pipelines/
# A virtual environment copied whole into the runtime stage: no compiler, no pip cache there.
# Every extra a shipped component needs at run time: kfp (the executor of the Python
# components), s3 and gcs (remote stores), esg (pyarrow and matplotlib for esg_aggregate).
# tests/test_image.py installs exactly this line into a fresh venv and runs each component.
RUN python -m venv /opt/carbonpipe \
    && /opt/carbonpipe/bin/pip install ".[kfp,s3,gcs,azure,esg]" \
    && /opt/carbonpipe/bin/python -m compileall -q -j 0 /opt/carbonpipe/lib

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="carbonpipe" \
      org.opencontainers.image.description="Carbon accounting for ML pipeline steps: CodeCarbon, cloud-located grid intensity, budgets." \
      org.opencontainers.image.source="https://github.com/carbonpipe/carbonpipe" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --system --gid 10001 carbonpipe \
    && useradd --system --uid 10001 --gid 10001 --create-home --home-dir /home/carbonpipe \
       --shell /usr/sbin/nologin carbonpipe
COPY --from=build /opt/carbonpipe /opt/carbonpipe
# The venv first on PATH: `python3` (what KFP's lightweight components call), `python` and
# `carbonpipe` all come from it. The .pyc files were compiled at build time; the read-only
# site-packages need no more. The hardware profile is probed on first use in the pod (the
# build machine is not the one that runs the steps) and cached under the user's home.
ENV PATH=/opt/carbonpipe/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/home/carbonpipe
# A numeric user, so Kubernetes' runAsNonRoot can verify it.
USER 10001:10001
WORKDIR /home/carbonpipe
ENTRYPOINT ["carbonpipe"]
CMD ["--help"]
