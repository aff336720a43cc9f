# syntax=docker/dockerfile:1
# One image for every Herald role: the role is the command, e.g. `ingest`, `dispatcher --queues send-sms`,
# `db upgrade` (see deploy/k8s/ and docs/operations.md).
# Runs as a non-root user with a read-only root filesystem: nothing is written at run time except /tmp,
# which Kubernetes mounts as an emptyDir.

ARG PYTHON_IMAGE=python:3.11-slim-trixie

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/herald
WORKDIR /src
# Dependencies first, from pyproject.toml alone, so that a code change does not reinstall them.
COPY pyproject.toml ./
RUN python -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]))' \
        > /tmp/requirements.txt \
    && /opt/herald/bin/pip install --requirement /tmp/requirements.txt
COPY herald ./herald
COPY services ./services
# pip compiles bytecode as it installs; compileall fails the build if any module was left out, since
# the interpreter cannot write __pycache__ on the read-only root filesystem at run time.
RUN /opt/herald/bin/pip install --no-deps . \
    && /opt/herald/bin/python -m compileall -q /opt/herald

FROM ${PYTHON_IMAGE} AS runtime
RUN groupadd --system --gid 10001 herald \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /tmp --shell /usr/sbin/nologin herald
COPY --from=build /opt/herald /opt/herald
ENV PATH=/opt/herald/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    TMPDIR=/tmp
WORKDIR /tmp
USER 10001:10001
# gRPC: ingest 50051, callbacks 50052, scheduler 50053, dispatcher 50054; HTTP: gateway 6012 (Notify's v2
# API and the providers' receipt webhooks); Prometheus 9100 (HERALD_METRICS_PORT).
EXPOSE 50051 50052 50053 50054 6012 9100
ENTRYPOINT ["herald"]
CMD ["--help"]
