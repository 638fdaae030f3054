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
#
# Reproducible: the dependencies and the build tools are pinned with their hashes in
# deploy/image/ (`make image-lock` writes them from pyproject.toml), and Arbiter itself is
# installed from the wheel built here. Only wheels are installed: no compiler in any stage.
# `make image-test` builds this image from scratch with podman and runs it.

ARG PYTHON_IMAGE=python:3.12-slim-bookworm

# --- tools: pip and the build backend, pinned; never in the final image ------------------------
FROM ${PYTHON_IMAGE} AS tools

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
# The CA bundle pip trusts, for a build behind a TLS-intercepting proxy (mount it into the build
# and pass its path, as `make image-test` does); unset, pip uses its own.
ARG PIP_CERT

COPY deploy/image/build-requirements.txt /tmp/
RUN python3 -m venv /opt/tools \
    && /opt/tools/bin/pip install --require-hashes --only-binary :all: \
       -r /tmp/build-requirements.txt

# --- dependencies: a venv without pip holding the pinned requirements --------------------------
# It depends on deploy/image/requirements.txt alone, so a code change reuses it, layer and all.
FROM tools AS dependencies

ARG PIP_CERT
RUN python3 -m venv --without-pip /opt/arbiter \
    && /opt/arbiter/bin/python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])" \
       > /tmp/site-packages \
    && echo /opt/arbiter/app > "$(cat /tmp/site-packages)/arbiter-app.pth"
COPY deploy/image/requirements.txt /tmp/
RUN /opt/tools/bin/pip --python /opt/arbiter/bin/python install --require-hashes \
    --only-binary :all: -r /tmp/requirements.txt

# --- wheel: Arbiter's wheel, built from the source ---------------------------------------------
FROM tools AS wheel

WORKDIR /src
COPY . .
RUN /opt/tools/bin/pip wheel --no-deps --no-build-isolation --no-index -w /dist .

# --- app: the wheel, installed in /opt/arbiter/app (on the venv's path through arbiter-app.pth) -
FROM dependencies AS app

COPY --from=wheel /dist/ /dist/
RUN /opt/tools/bin/pip --python /opt/arbiter/bin/python install --no-deps --no-index \
    --target /opt/arbiter/app /dist/*.whl \
    && PATH=/opt/arbiter/app/bin:/opt/arbiter/bin:$PATH arbiter --version

# --- final: the interpreter, the dependencies' layer and Arbiter's own small layer --------------
FROM ${PYTHON_IMAGE}

LABEL org.opencontainers.image.title="arbiter" \
      org.opencontainers.image.description="A self-hosted AI code reviewer for GitHub and GitLab" \
      org.opencontainers.image.licenses="MIT"

ENV PATH=/opt/arbiter/app/bin:/opt/arbiter/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN groupadd --system --gid 10001 arbiter \
    && useradd --system --uid 10001 --gid arbiter --home-dir /data --no-create-home \
       --shell /usr/sbin/nologin arbiter \
    && mkdir -p /data \
    && chown arbiter:arbiter /data

COPY --from=dependencies /opt/arbiter /opt/arbiter
COPY --from=app /opt/arbiter/app /opt/arbiter/app

WORKDIR /data
USER 10001:10001
EXPOSE 8000 9100

# Alive on either port: `serve` answers /health/live on ARBITER_PORT (8000), `worker` on
# ARBITER_WORKER_HTTP_PORT (9100); `migrate` exits before the first check.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-m", "bot.healthcheck"]

ENTRYPOINT ["arbiter"]
CMD ["serve"]
