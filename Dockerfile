# syntax=docker/dockerfile:1
# One image for the three services: `tagstream tagger | ingest | notifier` (docs/deploy.md).
# Stage 1 builds the project wheel, with the tagging engine compiled by mypyc (TAGSTREAM_USE_MYPYC=1,
# setup.py; docs/performance.md), and installs it with its dependencies into a virtualenv; stage 2
# copies only that virtualenv into a slim runtime: no compiler, no pip cache, no sources, no dev tools. Runs as a fixed non-root uid and works with a read-only root filesystem: the only
# writable paths are the volumes /tmp and /var/lib/tagstream (RocksDB state of the tagger).
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 TAGSTREAM_USE_MYPYC=1
RUN apt-get update -qq \
 && apt-get install -y -qq --no-install-recommends gcc libc6-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml setup.py README.md LICENSE NOTICE ./
COPY schemas ./schemas
COPY services ./services
RUN python -m pip wheel --no-deps --wheel-dir /wheels . \
 && python -m venv /opt/tagstream \
 && /opt/tagstream/bin/pip install /wheels/tagstream-*.whl \
 && /opt/tagstream/bin/pip uninstall --yes pip \
 && find /opt/tagstream -name '__pycache__' -prune -exec rm -rf {} + \
 && /opt/tagstream/bin/python -m compileall -q /opt/tagstream/lib

FROM ${PYTHON_IMAGE} AS runtime
ARG UID=10001
RUN groupadd --system --gid ${UID} tagstream \
 && useradd --system --uid ${UID} --gid ${UID} --home-dir /nonexistent --no-create-home --shell /usr/sbin/nologin tagstream \
 && mkdir -p /var/lib/tagstream \
 && chown ${UID}:${UID} /var/lib/tagstream
COPY --from=build /opt/tagstream /opt/tagstream
ENV PATH=/opt/tagstream/bin:${PATH} \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    TAGSTREAM_TAGGER__DATADIR=/var/lib/tagstream \
    TAGSTREAM_INGEST__HOST=0.0.0.0 \
    TAGSTREAM_TAGGER__WEB_HOST=0.0.0.0 \
    TAGSTREAM_NOTIFIER__WEB_HOST=0.0.0.0
VOLUME ["/tmp", "/var/lib/tagstream"]
WORKDIR /var/lib/tagstream
USER ${UID}:${UID}
# tagger web (metrics, health), ingest HTTP API, notifier web; the CLI listens on 127.0.0.1 by default,
# the image on every interface of its container (published or not by the runtime, compose, the chart)
EXPOSE 6066 8080 8081
ENTRYPOINT ["tagstream"]
CMD ["--help"]
