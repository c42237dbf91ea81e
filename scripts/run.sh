#!/usr/bin/env bash
# Set up (first run) and start Glimpse with its embedded defaults:
# SQLite database and filesystem store under ./glimpse-data, listening on
# http://127.0.0.1:9292, auth_strategy = noauth (identity from X-Project-Id /
# X-User-Id / X-Roles headers; none = the default local admin).
# Arguments go to glimpse-api, e.g. `bash scripts/run.sh --config-file my.conf`.
# Stop with Ctrl-C or SIGTERM.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/ensure-venv.sh
exec .venv/bin/glimpse-api "$@"
