#!/usr/bin/env bash
# Install (if missing) and start the services the test suite talks to:
# a throw-away PostgreSQL cluster and RabbitMQ, both on 127.0.0.1 (and install
# wrk, which the benchmarks and their harness test use).
# Idempotent: a service already running is left as it is.
# Source it (". scripts/test-services.sh") to get GLIMPSE_TEST_PG_URL and
# GLIMPSE_TEST_RABBIT_URL exported; run it to just start the services.
set -euo pipefail

PG_PORT="${GLIMPSE_TEST_PG_PORT:-55432}"
PG_DIR="${GLIMPSE_TEST_PG_DIR:-/tmp/glimpse-test-pg}"

need_apt=()
command -v rabbitmq-server >/dev/null 2>&1 || need_apt+=(rabbitmq-server)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need_apt+=(postgresql)
# not a service: the load generator bench/ uses, which a test runs on a tiny workload
command -v wrk >/dev/null 2>&1 || need_apt+=(wrk)
if [ "${#need_apt[@]}" -gt 0 ]; then
  echo "[services] installing ${need_apt[*]} from Debian" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

# --- PostgreSQL: initdb + pg_ctl on a private port, trust auth on loopback.
PG_BIN="$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)"
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
if ! as_pg "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT" 2>/dev/null; then
  if [ ! -s "$PG_DIR/PG_VERSION" ]; then
    mkdir -p "$PG_DIR"
    [ "$(id -u)" = 0 ] && chown postgres:postgres "$PG_DIR"
    as_pg "$PG_BIN/initdb" -D "$PG_DIR" -U postgres -A trust --no-sync >/dev/null
  fi
  as_pg "$PG_BIN/pg_ctl" -D "$PG_DIR" -l "$PG_DIR/server.log" -w -t 60 start \
    -o "-p $PG_PORT -c listen_addresses=127.0.0.1 -k $PG_DIR -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200" >/dev/null
fi
export GLIMPSE_TEST_PG_URL="postgresql+psycopg://postgres@127.0.0.1:${PG_PORT}/postgres"

# --- RabbitMQ on 127.0.0.1:5672 (guest/guest works from loopback).
if ! rabbitmq-diagnostics -q ping >/dev/null 2>&1; then
  RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 RABBITMQ_NODE_PORT=5672 rabbitmq-server -detached >/dev/null 2>&1 || true
  for _ in $(seq 1 120); do
    rabbitmq-diagnostics -q ping >/dev/null 2>&1 && break
    sleep 1
  done
fi
rabbitmqctl -q await_startup >/dev/null 2>&1 || true
rabbitmqctl -q start_app >/dev/null 2>&1 || true   # in case a test left it stopped
# A test may have just stopped/started the app (outage tests): give it a minute.
for _ in $(seq 1 60); do
  rabbitmq-diagnostics -q check_running >/dev/null 2>&1 && break
  sleep 1
done
rabbitmq-diagnostics -q check_running >/dev/null
export GLIMPSE_TEST_RABBIT_URL="rabbit://guest:guest@127.0.0.1:5672/"
echo "[services] PostgreSQL on 127.0.0.1:$PG_PORT, RabbitMQ on 127.0.0.1:5672" >&2
