# The two commands that do everything on a fresh machine: `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
SLUICE := $(VENV)/bin/sluice
STAMP := $(VENV)/.installed-stamp
# Ray: one explicit auth mode for every step (a stray ~/.ray/auth_token would otherwise
# turn token auth on for `ray start` and break job submission; see README).
export RAY_AUTH_MODE ?= disabled
export RAY_USAGE_STATS_ENABLED ?= 0

.PHONY: system install up down status demo test lint clean

# System tools from Debian's packages, installed when missing: OpenJDK 17 (never a JDK >= 24:
# Cassandra calls System.setSecurityManager), Maven (fetches the servers' jars), promtool (the
# monitoring tests lint Prometheus configs and scrapes with it), python3-venv where Python
# lacks ensurepip (Debian's own python3). Root, or sudo, is needed only when something is
# missing.
system:
	@need=""; \
	ls /usr/lib/jvm/*-17-*/bin/java >/dev/null 2>&1 || need="$$need openjdk-17-jre-headless"; \
	command -v mvn >/dev/null 2>&1 || need="$$need maven"; \
	command -v promtool >/dev/null 2>&1 || need="$$need prometheus"; \
	command -v chromium >/dev/null 2>&1 || need="$$need chromium"; \
	$(PYTHON) -c 'import ensurepip' >/dev/null 2>&1 || need="$$need python3-venv"; \
	if [ -n "$$need" ]; then \
	  sudo=""; [ "$$(id -u)" = 0 ] || sudo="sudo"; \
	  echo "make system: installing$$need"; \
	  $$sudo apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq --no-install-recommends $$need; \
	fi

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	@$(PY) -m pip --version >/dev/null 2>&1 || { rm -rf $(VENV) && $(PYTHON) -m venv $(VENV); }
	$(PY) -m pip install -q pip==26.3
	$(PY) -m pip install -q -c constraints.txt -e ".[dev,gbm]"
	@touch $(STAMP)

up: system install
	$(SLUICE) local up

down:
	@if [ -x $(SLUICE) ]; then $(SLUICE) local down && $(SLUICE) local down --cluster; fi

status: install
	$(SLUICE) local status

demo: up
	$(PY) -m pipelines.demo

test: up
	$(VENV)/bin/pytest $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check platform pipelines serve_apps tests bench

clean: down
	rm -rf .state
