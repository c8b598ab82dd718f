# Fleetroom — the two commands a new user needs are `make demo` and `make test`.
SHELL := /bin/bash
export UV_PYTHON := /usr/bin/python3.11
export UV_PYTHON_DOWNLOADS := never
export PATH := $(HOME)/.local/bin:$(PATH)
UV := uv run --locked --quiet

.PHONY: setup demo test lint pytest pytest-postgres bench bench-transport fmt messages

setup:
	@scripts/setup.sh

demo: setup
	$(UV) python -m fleetroom_fleetsim.demo

test: setup lint pytest pytest-postgres

lint:
	$(UV) ruff check .
	$(UV) mypy packages/protocol/fleetroom_protocol packages/profiles/fleetroom_profiles agent/fleetroom_agent tools/fleetsim/fleetroom_fleetsim server/fleetroom
	$(UV) mypy bench/*.py

pytest:
	$(UV) pytest -n 2 --dist loadgroup

# The server suite again on PostgreSQL (the machine's server on 127.0.0.1, trust auth).
# In CI it must run; elsewhere it is skipped with a message when PostgreSQL is absent.
PG_URL ?= postgresql://postgres@127.0.0.1:5432/fleetroom
pytest-postgres:
	@if $(UV) python -c "import psycopg,sys; psycopg.connect('$(PG_URL)'.rsplit('/',1)[0]+'/postgres', connect_timeout=3).close()" 2>/dev/null; then \
		FLEETROOM_DATABASE_URL=$(PG_URL) $(UV) pytest -n 2 server/tests; \
	elif [ "$$CI" = "true" ]; then \
		echo "PostgreSQL at $(PG_URL) is not reachable, and CI must run the PostgreSQL suite" >&2; exit 1; \
	else \
		echo "SKIPPED: server tests on PostgreSQL ($(PG_URL) not reachable)"; \
	fi

bench: setup
	$(UV) python -m bench.run

# Agent → server over HTTPS: ingest vs. raw inserts, drain after a 72 h outage, agent CPU/RSS.
bench-transport: setup
	$(UV) python -m bench.agent_transport

fmt:
	$(UV) ruff check --fix .

# Refresh the German catalogues from the source and compile them (commit .po and .mo).
messages:
	scripts/messages.sh
