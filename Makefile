# The two set-up commands of the README: `make serve` and `make test`.
# Both create .venv on first use (and again whenever pyproject.toml changes).
VENV   ?= .venv
PYTHON ?= python3
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

# The image's pinned dependencies (with hashes) and its build tools: `make image-lock` writes
# them from pyproject.toml; the Dockerfile installs exactly these.
IMAGE_LOCK       := deploy/image/requirements.txt
IMAGE_BUILD_LOCK := deploy/image/build-requirements.txt
LOCK_TOOL        := build/lock/bin/uv
UV_VERSION       := 0.13.9
# The oldest Python the image may be built on (Debian 12's); the lock covers every newer one.
LOCK_PYTHON      := 3.11

.PHONY: serve test lint typecheck pytest install image-lock image-test

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

serve: $(STAMP)
	$(BIN)/arbiter serve

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

# One test process per core (pytest-xdist): most of the suite's time is end-to-end tests waiting
# on the servers they start. Each process has a PostgreSQL database of its own (tests/conftest.py)
# and each test its own Redis keys, ports and folders.
pytest: $(STAMP)
	$(BIN)/pytest -n auto

test: lint typecheck pytest

$(LOCK_TOOL):
	$(PYTHON) -m venv build/lock
	build/lock/bin/pip install --quiet 'uv==$(UV_VERSION)'

image-lock: $(LOCK_TOOL)
	$(LOCK_TOOL) pip compile pyproject.toml --universal --python-version $(LOCK_PYTHON) \
		--generate-hashes --quiet --custom-compile-command 'make image-lock' -o $(IMAGE_LOCK)
	printf 'pip\nsetuptools>=77\n' | $(LOCK_TOOL) pip compile - --universal \
		--python-version $(LOCK_PYTHON) --generate-hashes --quiet \
		--custom-compile-command 'make image-lock' -o $(IMAGE_BUILD_LOCK)

# Builds the image from an empty image store with podman, runs it and the compose stack, and
# removes everything again; see tests/image/run.
image-test:
	tests/image/run
