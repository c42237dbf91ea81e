#!/usr/bin/env bash
# The whole test suite, from a fresh machine (Debian 12, root, or CI=true with no
# stdin): virtualenv + packages, the services the tests talk to (PostgreSQL and
# RabbitMQ via scripts/test-services.sh, Keystone via scripts/keystone.sh), then
# lint (ruff), types (mypy) and the tests (pytest, serial: tests share one
# RabbitMQ broker). Arguments go to pytest, e.g. `bash scripts/test.sh tests/unit -x`.
# Exit status: non-zero if any of lint, types or tests failed, and also when
# pytest collected no tests (its exit status 5 is a failure here).
# Idempotent: re-running reuses what is already installed and running.
set -euo pipefail
cd "$(dirname "$0")/.."
exec </dev/null
export DEBIAN_FRONTEND=noninteractive

GLIMPSE_EXTRAS="test,bench" . scripts/ensure-venv.sh

. scripts/test-services.sh
if [ -f scripts/keystone.sh ]; then
  . scripts/keystone.sh
fi

status=0
lint_paths=(src tests)
[ -d bench ] && lint_paths+=(bench)
echo "[test] ruff" >&2
.venv/bin/ruff check "${lint_paths[@]}" || { echo "[test] ruff found problems" >&2; status=1; }
echo "[test] mypy" >&2
.venv/bin/mypy || { echo "[test] mypy found problems" >&2; status=1; }

echo "[test] pytest" >&2
rc=0
.venv/bin/python -m pytest -p no:cacheprovider -ra --durations=20 "$@" || rc=$?
if [ "$rc" -eq 5 ]; then
  echo "[test] pytest collected no tests: that is a failure" >&2
fi
if [ "$rc" -ne 0 ]; then
  status="$rc"
fi
[ "$status" -eq 0 ] && echo "[test] all passed" >&2
exit "$status"
