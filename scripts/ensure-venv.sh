# Sourced by scripts/run.sh and scripts/test.sh: make sure .venv exists and has
# Glimpse installed (editable) with the extras given in GLIMPSE_EXTRAS
# (e.g. "test,bench"). Works on a fresh Debian 12 as root: installs
# python3-venv when the interpreter cannot create virtualenvs. Re-running is
# cheap: the install is skipped while pyproject.toml and the extras are unchanged.

_glimpse_py="${PYTHON:-python3}"
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1

if ! command -v "$_glimpse_py" >/dev/null 2>&1; then
  echo "[venv] $_glimpse_py not found; installing python3 from Debian" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3 >/dev/null
fi
if ! "$_glimpse_py" -c 'import sys; assert sys.version_info >= (3, 11)' 2>/dev/null; then
  echo "[venv] Glimpse needs Python >= 3.11 ($_glimpse_py is $("$_glimpse_py" -V 2>&1))" >&2
  return 1 2>/dev/null || exit 1
fi
if ! .venv/bin/python -c 'import sys' >/dev/null 2>&1; then
  rm -rf .venv
  if ! "$_glimpse_py" -m venv .venv >/dev/null 2>&1; then
    echo "[venv] installing python3-venv from Debian" >&2
    rm -rf .venv
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
    "$_glimpse_py" -m venv .venv
  fi
fi

_glimpse_spec="."
[ -n "${GLIMPSE_EXTRAS:-}" ] && _glimpse_spec=".[${GLIMPSE_EXTRAS}]"
_glimpse_stamp="$(cat pyproject.toml | sha256sum | cut -c1-16)-${GLIMPSE_EXTRAS:-none}"
if [ "$(cat .venv/.glimpse-installed 2>/dev/null)" != "$_glimpse_stamp" ] \
    || ! .venv/bin/python -c 'import glimpse' >/dev/null 2>&1; then
  echo "[venv] installing glimpse ${_glimpse_spec} into .venv" >&2
  .venv/bin/python -m pip install -q --upgrade pip >/dev/null
  .venv/bin/python -m pip install -q -e "$_glimpse_spec"
  echo "$_glimpse_stamp" > .venv/.glimpse-installed
fi
unset _glimpse_py _glimpse_spec _glimpse_stamp
