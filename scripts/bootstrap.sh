#!/usr/bin/env bash
# Set up .venv from uv.lock with a Python 3.12 interpreter. Idempotent: a second run
# only checks that the environment matches the lock (about a second).
set -euo pipefail
cd "$(dirname "$0")/.."

UV_VERSION="0.13.8"

find_python() {
  local candidates=()
  [ -n "${PYTHON:-}" ] && candidates+=("$PYTHON")
  candidates+=(python3.12)
  for dir in "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.12*/bin /usr/local/bin /usr/bin; do
    [ -x "$dir/python3.12" ] && candidates+=("$dir/python3.12")
  done
  candidates+=(python3)
  for candidate in "${candidates[@]}"; do
    if command -v "$candidate" >/dev/null 2>&1 &&
       "$candidate" -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 12) else 1)' 2>/dev/null; then
      command -v "$candidate"
      return 0
    fi
  done
  return 1
}

PY=$(find_python) || {
  echo "error: no Python 3.12 interpreter found (tried \$PYTHON, python3.12, pyenv versions, python3)." >&2
  echo "       install Python 3.12 or point PYTHON=/path/to/python3.12" >&2
  exit 1
}

# uv lives in its own small venv so `uv sync` never removes it from .venv.
if [ ! -x .tools/bin/uv ] || [ "$(.tools/bin/uv --version 2>/dev/null | cut -d' ' -f2)" != "$UV_VERSION" ]; then
  echo "bootstrap: installing uv $UV_VERSION into .tools/ (using $PY)"
  "$PY" -m venv .tools
  .tools/bin/python -m pip install --quiet --disable-pip-version-check "uv==$UV_VERSION"
fi

export UV_PROJECT_ENVIRONMENT=.venv
.tools/bin/uv sync --frozen --python "$PY" --quiet --compile-bytecode
# Bytecode for the project's own modules too: where PYTHONDONTWRITEBYTECODE is set, every
# process would compile them again (the venv's packages: --compile-bytecode above).
.venv/bin/python -m compileall -q trading serving flows hmmtrader tests >/dev/null
# The Data Docs' CSS and JS (pinned npm packages, integrity checked) so that they render
# offline; without them the docs keep their CDN links (a warning, not a failed setup).
.venv/bin/python scripts/fetch_web_assets.py || true
