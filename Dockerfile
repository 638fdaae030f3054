# syntax=docker/dockerfile:1
# Arbiter's image: `arbiter` is the entry point, `serve` the default command.
#
#   docker build -t arbiter:latest .
#   docker run --rm -p 8000:8000 -v arbiter-data:/data arbiter:latest              # web + workers, SQLite
#   docker run --rm --env-file .env arbiter:latest worker                          # workers only
#   docker run --rm --env-file .env arbiter:latest migrate                         # schema up to date
#
# The working directory /data holds what a process writes: the embedded SQLite store
# (./arbiter.db by default) and what the /setup page saves (.env and the App's private key).
# Mount a volume there when you use either. docs/deployment.md has the rest.

ARG PYTHON_IMAGE=python:3.12-slim-bookworm

# --- build: compilers live here only ----------------------------------------------------------
FROM ${PYTHON_IMAGE} AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

# For a dependency without a wheel for this platform; none of it reaches the final image.
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*

RUN python -m venv /opt/arbiter
ENV PATH=/opt/arbiter/bin:$PATH

# Dependencies first, from pyproject.toml alone, so a code change does not reinstall them.
WORKDIR /app
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt

# Then Arbiter itself. Installed in place (editable) on purpose: the code finds app.yml, the
# dashboard and alembic.ini beside its packages, at the root of the source tree (/app).
COPY . .
RUN pip install --no-deps -e . \
    && python -m compileall -q /app/bot /app/handlers /app/platforms /app/prompts /app/config \
    && arbiter --version

# --- final: the interpreter, the virtualenv and the source; no compilers ----------------------
FROM ${PYTHON_IMAGE}

LABEL org.opencontainers.image.title="arbiter" \
      org.opencontainers.image.description="A self-hosted AI code reviewer for GitHub and GitLab" \
      org.opencontainers.image.licenses="MIT"

ENV PATH=/opt/arbiter/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN groupadd --system --gid 10001 arbiter \
    && useradd --system --uid 10001 --gid arbiter --home-dir /data --no-create-home \
       --shell /usr/sbin/nologin arbiter \
    && mkdir -p /data \
    && chown arbiter:arbiter /data

COPY --from=build /opt/arbiter /opt/arbiter
COPY --from=build /app /app

WORKDIR /data
USER 10001:10001
EXPOSE 8000

# /health/live answers as long as the process serves HTTP; `arbiter worker` has no HTTP server,
# so docker-compose.yml turns this check off for the worker and the one-shot migrate.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health/live' % os.environ.get('ARBITER_PORT', '8000'), timeout=4)"]

ENTRYPOINT ["arbiter"]
CMD ["serve"]
