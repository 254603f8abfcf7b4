#!/usr/bin/env bash
# `make compose-test`: build the image, run docker-compose.yml for real, drive it from outside.
#
#   1. a Docker engine with Compose v2 and buildx: the one running, or ../shared/docker/engine.sh
#      (FOODCAL_DOCKER_SETUP names another script); none that can be set up: SKIP, exit 0
#   2. the official base images, or local stand-ins built under the same names from
#      local/debian:bookworm where Docker Hub cannot be reached (tests/compose/*.Dockerfile)
#   3. wheels for requirements-build.txt (requirements.txt and the build's own), fetched by this
#      machine's own pip (its config decides where from), into build/compose/wheels: the image
#      builds read only those
#   4. `docker compose up --wait` of docker-compose.yml + tests/compose/docker-compose.test.yml
#      as project foodcal-compose-test, then tests/compose/stack_checks.py (pytest), which ends
#      with `down -v`; the stack is removed whatever happens.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
PY=${PY:-$ROOT/.venv/bin/python}
PROJECT=${FOODCAL_COMPOSE_PROJECT:-foodcal-compose-test}
SETUP=${FOODCAL_DOCKER_SETUP:-$ROOT/../shared/docker/engine.sh}
started=$(date +%s)
say() { printf 'compose-test [%3ss] %s\n' "$(($(date +%s) - started))" "$*"; }
skip() { echo "compose-test: SKIPPED: $*"; exit 0; }

# -- 1. an engine --------------------------------------------------------------------------------
engine_ok() { docker info >/dev/null 2>&1 && docker compose version >/dev/null 2>&1 && docker buildx version >/dev/null 2>&1; }
if ! engine_ok; then
  if [ "${FOODCAL_NO_ENGINE_SETUP:-}" = 1 ]; then
    skip "no Docker engine with compose and buildx is running (FOODCAL_NO_ENGINE_SETUP=1)"
  fi
  [ -x "$SETUP" ] || skip "no Docker engine is running and there is no setup script at $SETUP"
  if [ "$(id -u)" = 0 ]; then runner=(); elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then runner=(sudo -n); else
    skip "no Docker engine is running and setting one up needs root (no passwordless sudo)"
  fi
  mkdir -p build
  say "starting a Docker engine: $SETUP"
  "${runner[@]}" "$SETUP" > build/compose-engine.log 2>&1 || { tail -20 build/compose-engine.log; skip "the engine setup failed (log: build/compose-engine.log)"; }
  engine_ok || skip "the engine setup ran but no engine answers (log: build/compose-engine.log)"
fi
say "engine $(docker version --format '{{.Server.Version}}'), $(docker compose version --short)"

# -- 2. base images ------------------------------------------------------------------------------
base_image() {  # name, stand-in Dockerfile
  docker image inspect "$1" >/dev/null 2>&1 && return
  if timeout 30 docker pull -q "$1" >/dev/null 2>&1; then say "pulled $1"; return; fi
  docker image inspect local/debian:bookworm >/dev/null 2>&1 \
    || skip "$1 cannot be pulled and there is no local/debian:bookworm to build a stand-in from"
  say "building a local stand-in for $1 ($2)"
  docker build -q -t "$1" -f "$2" tests/compose >/dev/null
}
base_image python:3.11-slim-bookworm tests/compose/python.Dockerfile
base_image postgres:15 tests/compose/postgres.Dockerfile

# -- 3. wheels, the way this machine's pip gets them ---------------------------------------------
mkdir -p build/compose/wheels
say "wheels for requirements-build.txt in build/compose/wheels (pip download when it changed)"
# The image's Python is 3.11 on Debian bookworm, like this machine's venv: the same wheels fit.
"$PY" -c 'import sys; assert sys.version_info[:2] == (3, 11), sys.version' \
  || { echo "compose-test: the venv must be Python 3.11, as the image is" >&2; exit 1; }
stamp=build/compose/wheels/.requirements.sha256
if ! sha256sum -c --status "$stamp" 2>/dev/null; then
  "$PY" -m pip download -q --disable-pip-version-check --only-binary :all: \
    -r requirements-build.txt -d build/compose/wheels 2> >(grep -v 'is ignored: it is neither' >&2)
  sha256sum requirements.txt requirements-build.txt > "$stamp"
fi
ls build/compose/wheels/torch-2.13.0+cpu-*.whl >/dev/null 2>&1 \
  || { echo "compose-test: no CPU torch wheel among the downloaded wheels" >&2; exit 1; }

# -- 4. the stack --------------------------------------------------------------------------------
[ -f .env ] || cp .env.example .env   # docker-compose.yml reads .env, as `make setup` makes it
FOODCAL_TEST_PORT=${FOODCAL_TEST_PORT:-$("$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}
export FOODCAL_TEST_PORT
COMPOSE=(docker compose -p "$PROJECT" -f docker-compose.yml -f tests/compose/docker-compose.test.yml)
cleanup() {
  status=$?
  if [ "$status" != 0 ]; then
    "${COMPOSE[@]}" ps -a || true
    "${COMPOSE[@]}" logs --no-color --tail 60 || true
  fi
  "${COMPOSE[@]}" down -v --remove-orphans >/dev/null 2>&1 || true
  say "done (exit $status)"
}
trap cleanup EXIT
"${COMPOSE[@]}" down -v --remove-orphans >/dev/null 2>&1 || true  # a previous run's leftovers

say "docker compose build"
"${COMPOSE[@]}" build --quiet torchserve models  # the serving image, and it plus the build's packages
for image in foodcal:latest foodcal-models:latest; do
  say "image $image: $(docker image inspect "$image" --format '{{.Size}}' | awk '{printf "%.0f MB", $1 / 1e6}')"
done
say "docker compose up --wait (gateway on 127.0.0.1:$FOODCAL_TEST_PORT)"
"${COMPOSE[@]}" up -d --wait --wait-timeout 900 --quiet-pull
say "stack healthy; driving it from outside"
FOODCAL_COMPOSE="${COMPOSE[*]}" "$PY" -m pytest -q -p no:cacheprovider -o addopts="" \
  -s --timeout 1800 tests/compose/stack_checks.py "$@"
