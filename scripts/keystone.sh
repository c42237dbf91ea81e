#!/usr/bin/env bash
# A real Keystone (keystone==30.0.0 from PyPI) for the identity tests: SQLite,
# fernet tokens, served by uWSGI (pyuwsgi) on 127.0.0.1, with the test projects
# and users provisioned by tests/integration/keystone_fixture.py.
# Idempotent: a Keystone already answering is left as it is; a first set-up is
# saved to .test-services/keystone-cache (database + key folders) and restored
# next time (~4 s instead of ~25 s).
# Source it (". scripts/keystone.sh") to get GLIMPSE_TEST_KEYSTONE_URL exported.

KS_PORT="${GLIMPSE_TEST_KEYSTONE_PORT:-55357}"
KS_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
KS_VENV="${GLIMPSE_TEST_KEYSTONE_VENV:-$KS_ROOT/.test-services/keystone-venv}"
KS_CACHE="$KS_ROOT/.test-services/keystone-cache"
KS_DIR="${GLIMPSE_TEST_KEYSTONE_DIR:-/tmp/glimpse-test-keystone}"
KS_URL="http://127.0.0.1:${KS_PORT}/v3"
KS_ADMIN_PASSWORD="glimpse-test-admin"

_ks_up() { curl -sf -o /dev/null "http://127.0.0.1:${KS_PORT}/v3" 2>/dev/null; }

_ks_start() {
  if ! _ks_up; then
    if [ ! -x "$KS_VENV/bin/uwsgi" ] || [ ! -x "$KS_VENV/bin/keystone-manage" ]; then
      echo "[keystone] installing keystone==30.0.0 + pyuwsgi into $KS_VENV" >&2
      python3 -m venv "$KS_VENV"
      "$KS_VENV/bin/pip" install -q "keystone==30.0.0" "pyuwsgi>=2.0.28,<2.1" >/dev/null
    fi
    mkdir -p "$KS_DIR"
    cat > "$KS_DIR/keystone.conf" <<EOF
[DEFAULT]
log_file = $KS_DIR/keystone.log
[database]
connection = sqlite:///$KS_DIR/keystone.db
[token]
provider = fernet
expiration = 7200
[fernet_tokens]
key_repository = $KS_DIR/fernet-keys
[credential]
key_repository = $KS_DIR/credential-keys
[identity]
password_hash_rounds = 4
[cache]
enabled = true
backend = dogpile.cache.memory
[resource]
admin_project_name = admin
EOF
    local manage=("$KS_VENV/bin/keystone-manage" --config-file "$KS_DIR/keystone.conf")
    local fresh=0
    if [ ! -s "$KS_DIR/keystone.db" ]; then
      if [ -s "$KS_CACHE/keystone.db" ]; then
        cp "$KS_CACHE/keystone.db" "$KS_DIR/keystone.db"
        rm -rf "$KS_DIR/fernet-keys" "$KS_DIR/credential-keys"
        cp -r "$KS_CACHE/fernet-keys" "$KS_CACHE/credential-keys" "$KS_DIR/"
      else
        echo "[keystone] first set-up (db_sync, keys, bootstrap): ~25 s" >&2
        fresh=1
        "${manage[@]}" db_sync
        "${manage[@]}" fernet_setup --keystone-user "$(id -un)" --keystone-group "$(id -gn)"
        "${manage[@]}" credential_setup --keystone-user "$(id -un)" --keystone-group "$(id -gn)"
        "${manage[@]}" bootstrap --bootstrap-password "$KS_ADMIN_PASSWORD" \
          --bootstrap-admin-url "$KS_URL/" --bootstrap-public-url "$KS_URL/" \
          --bootstrap-internal-url "$KS_URL/" --bootstrap-region-id RegionOne
      fi
    fi
    chmod 700 "$KS_DIR/fernet-keys" "$KS_DIR/credential-keys"
    # One process (the token cache is per process), a few threads.
    OS_KEYSTONE_CONFIG_DIR="$KS_DIR" setsid nohup "$KS_VENV/bin/uwsgi" \
      --http11-socket "127.0.0.1:${KS_PORT}" --module keystone.wsgi.api:application \
      --master --processes 1 --threads 8 --enable-threads --die-on-term \
      --pidfile "$KS_DIR/uwsgi.pid" --env "OS_KEYSTONE_CONFIG_DIR=$KS_DIR" \
      >>"$KS_DIR/uwsgi.log" 2>&1 < /dev/null &
    for _ in $(seq 1 300); do
      _ks_up && break
      sleep 0.1
    done
    _ks_up || { echo "[keystone] did not come up, see $KS_DIR/uwsgi.log" >&2; return 1; }
    if [ "$fresh" = 1 ]; then
      GLIMPSE_TEST_KEYSTONE_URL="$KS_URL" GLIMPSE_TEST_KEYSTONE_ADMIN_PASSWORD="$KS_ADMIN_PASSWORD" \
        "$KS_ROOT/.venv/bin/python" "$KS_ROOT/tests/integration/keystone_fixture.py" provision \
        || { echo "[keystone] provisioning failed" >&2; return 1; }
      rm -rf "$KS_CACHE.tmp" && mkdir -p "$KS_CACHE.tmp"
      "$KS_ROOT/.venv/bin/python" -c "import sqlite3,sys; s=sqlite3.connect(sys.argv[1]); d=sqlite3.connect(sys.argv[2]); s.backup(d); d.close()" \
        "$KS_DIR/keystone.db" "$KS_CACHE.tmp/keystone.db"
      cp -r "$KS_DIR/fernet-keys" "$KS_DIR/credential-keys" "$KS_CACHE.tmp/"
      rm -rf "$KS_CACHE" && mv "$KS_CACHE.tmp" "$KS_CACHE"
    fi
  fi
  echo "[keystone] Keystone on $KS_URL" >&2
}

_ks_start
export GLIMPSE_TEST_KEYSTONE_URL="$KS_URL"
export GLIMPSE_TEST_KEYSTONE_ADMIN_PASSWORD="$KS_ADMIN_PASSWORD"
