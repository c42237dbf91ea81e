#!/usr/bin/env bash
# Regenerate etc/glimpse-api.conf.sample from the option definitions in
# src/glimpse/config.py (entry point oslo.config.opts: glimpse).
set -euo pipefail
cd "$(dirname "$0")/.."
GEN=".venv/bin/oslo-config-generator"
[ -x "$GEN" ] || GEN="oslo-config-generator"
exec "$GEN" --config-file etc/glimpse-config-generator.conf "$@"
