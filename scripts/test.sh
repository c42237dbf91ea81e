#!/usr/bin/env bash
# The whole test suite, from a fresh machine: virtualenv + packages, the
# services the tests talk to (PostgreSQL, RabbitMQ, Keystone), lint, types, tests.
# Idempotent: re-running reuses what is already installed and running.
set -euo pipefail
cd "$(dirname "$0")/.."

PY="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
.venv/bin/python -m pip install -q -e '.[test,bench]'

. scripts/test-services.sh

.venv/bin/ruff check src tests bench
.venv/bin/mypy
exec .venv/bin/python -m pytest -p no:cacheprovider "$@"
