# syntax=docker/dockerfile:1
# One image for the web server, the Celery worker and beat: the command chooses (README, Deploying).
#   web     python manage.py serve --host 0.0.0.0 --port 8000     (the default command)
#   worker  celery -A config worker --loglevel=INFO
#   beat    celery -A config beat --loglevel=INFO
# For reproducible builds pin the base image by digest:
#   docker build --build-arg PYTHON_IMAGE=python:3.11-slim-bookworm@sha256:<digest> -t backend:<tag> .
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# --- build: the virtualenv, from wheels only (no compiler in the image) ----------------------------------------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
COPY requirements.txt /tmp/requirements.txt
# requirements.txt pins every package, transitive ones included: --no-deps installs exactly that set, and
# `pip check` fails the build if the set is incomplete or inconsistent (tests/deploy/test_dockerfile.py checks it too).
RUN /opt/venv/bin/pip install --no-cache-dir --no-deps --only-binary=:all: -r /tmp/requirements.txt \
    && /opt/venv/bin/pip check

# --- runtime ---------------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime
# tini is PID 1: it forwards SIGTERM to the server (whose drain phase needs it) or Celery, and reaps orphans.
RUN apt-get update \
    && apt-get install -y --no-install-recommends tini=0.19.0-1+b3 \
    && rm -rf /var/lib/apt/lists/*
# A numeric, unprivileged user: Kubernetes' runAsNonRoot can only verify a numeric USER.
RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin app
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    DJANGO_DATA_DIR=/app/var \
    DJANGO_STATIC_ROOT=/app/staticfiles
WORKDIR /app
COPY --from=build /opt/venv /opt/venv
# The code belongs to root and is read-only for the app user; only /app/var (data, beat schedule) and
# /app/media (export files) are writable, and in Kubernetes both are volumes over a read-only root filesystem.
COPY . /app
# collectstatic needs settings but no secret: a throwaway development configuration for this one command, not
# kept in the image's environment. Bytecode is compiled now, as a read-only filesystem cannot take it later.
RUN DJANGO_DEBUG=true python manage.py collectstatic --noinput \
    && python -m compileall -q /app \
    && rm -rf /app/var \
    && mkdir -p /app/var /app/media \
    && chown 10001:10001 /app/var /app/media
USER 10001:10001
EXPOSE 8000
# /health touches no dependency: it says the server process answers. Worker and beat containers have no HTTP
# server: run them with --no-healthcheck (Kubernetes ignores HEALTHCHECK and uses its own probes).
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=3).status != 200)"]
# Exec form: no shell between tini and the process, so SIGTERM reaches it.
ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["python", "manage.py", "serve", "--host", "0.0.0.0", "--port", "8000"]
