# Fleetroom — the two commands a new user needs are `make demo` and `make test`.
SHELL := /bin/bash
export UV_PYTHON := /usr/bin/python3.11
export UV_PYTHON_DOWNLOADS := never
export PATH := $(HOME)/.local/bin:$(PATH)
UV := uv run --locked --quiet

.PHONY: setup demo test lint pytest bench fmt

setup:
	@scripts/setup.sh

demo: setup
	$(UV) python -m fleetroom_fleetsim.demo

test: setup lint pytest

lint:
	$(UV) ruff check .
	$(UV) mypy packages/protocol/fleetroom_protocol packages/profiles/fleetroom_profiles agent/fleetroom_agent tools/fleetsim/fleetroom_fleetsim server/fleetroom

pytest:
	$(UV) pytest -n 2 --dist loadgroup

bench: setup
	$(UV) python -m bench.run

fmt:
	$(UV) ruff check --fix .
