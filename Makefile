# foodcal — `make run` and `make test` set up a fresh machine by themselves.
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help
MAKEFLAGS += --no-print-directory

VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
GENERATED := foodcal/v1/__init__.py
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): requirements.txt requirements-dev.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements-dev.txt
	touch $@

java: ## install Java 17 for TorchServe if `java` is missing
	@command -v java >/dev/null || { $(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q openjdk-17-jre-headless; }

prometheus: ## install Prometheus (Debian's package) if missing: tests/test_metrics.py runs it
	@command -v prometheus >/dev/null || { $(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q --no-install-recommends prometheus; }

$(GENERATED): $(STAMP) foodcal/ops/codegen.py $(wildcard protos/foodcal/v1/*.proto)
	$(PY) -m foodcal.ops.codegen

.env:
	cp .env.example .env

setup: $(STAMP) java $(GENERATED) .env ## venv, packages, Java, generated gRPC code, .env

protos: $(STAMP) ## regenerate the gRPC code from protos/ and the TorchServe jar
	$(PY) -m foodcal.ops.codegen

models: setup ## build food101.mar and nutrition v0 into the model store (no-op when unchanged)
	$(PY) -m model_store.build

run: setup models ## start TorchServe, gateway, labeler and trainer under supervisord; crashes restart, Ctrl-C stops all
	mkdir -p run  # .env is read by our settings (where the shell wins), not by supervisord
	FOODCAL_RUN_DIR=$(CURDIR)/run exec $(VENV)/bin/supervisord -c supervisord.conf

status: ## the state, pid and uptime of each process `make run` supervises
	@FOODCAL_RUN_DIR=$(CURDIR)/run $(VENV)/bin/supervisorctl -c supervisord.conf status

lint: setup ## ruff
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

test: setup prometheus ## ruff and the whole pytest suite (needs PostgreSQL on 127.0.0.1:5432)
	$(MAKE) lint
	$(PY) -m pytest -q

compose-test: setup ## build the image, run docker-compose.yml for real and drive it from outside (SKIPPED without a Docker engine)
	tests/compose/run.sh

bench: setup ## training and serving benchmarks (prints ratios, writes bench/results/)
	$(PY) -m bench.training
	$(PY) -m bench.training --truth
	$(PY) -m bench.serving
	$(PY) -m bench.precision
	$(PY) -m bench.runtimes
	$(PY) -m bench.label_policy
	$(PY) -m bench.angles
	$(PY) -m bench.gateway_cpu

soak: setup ## 2 minutes of 8 clients with a training run hot-swapping in the middle; prints RSS and fds
	$(PY) -m tests.soak --duration 120 --clients 8

abuse: setup ## the attacks of issue 30 on the system `make run` starts (~4 min): what each did to honest clients' p99 and the store; writes bench/results/abuse.txt
	$(PY) -m tests.abuse

backfill: setup ## re-embed stored images through TorchServe after the classifier changed
	$(PY) -m trainer.backfill

clean: ## remove generated code, built models and run state (keeps data/ and uploads/)
	rm -rf foodcal/v1 foodcal/torchserve model_store/mar model_store/checkpoints run

.PHONY: help java prometheus setup protos models run status lint test compose-test bench soak abuse backfill clean
