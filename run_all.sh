#!/usr/bin/env bash
# Run the whole study, or its tests, from a fresh clone.
#   ./run_all.sh [--profile smoke|default|gpu|paper] [--only NAME] [--param key=value ...] [--render-only] [--publish] [--live]
#   ./run_all.sh --test [ARGS]     nbval re-runs the smoke copies (reference/smoke/), then the library tests
#                                  (ARGS go to pytest; paths among them replace both)
# Uses the active conda env or virtualenv when it is Python >= 3.11; otherwise creates .venv.
# Installs requirements.txt and the package (editable) once, again only when they change.
set -euo pipefail
cd "$(dirname "$0")"

python_ok() { "$1" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; }

if [ -n "${VIRTUAL_ENV:-}${CONDA_PREFIX:-}" ] && [ "${CONDA_DEFAULT_ENV:-}" != "base" ] && python_ok python; then
  PY=python
else
  if [ ! -x .venv/bin/python ]; then
    base=""
    for candidate in python3.11 python3.12 python3; do
      if command -v "$candidate" >/dev/null && python_ok "$candidate"; then base=$candidate; break; fi
    done
    [ -n "$base" ] || { echo "run_all.sh: needs Python >= 3.11 (python3.11 recommended), or an active conda env from environment.yml" >&2; exit 2; }
    echo "run_all.sh: creating .venv with $base"
    "$base" -m venv .venv
  fi
  PY=.venv/bin/python
fi

stamp="$("$PY" -c 'import sys; print(sys.prefix)')/.semscale-installed"
want="$(cat requirements.txt pyproject.toml | sha256sum | cut -d' ' -f1) $(pwd)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "run_all.sh: installing requirements.txt and semscale (first run takes a few minutes)"
  "$PY" -m pip install --quiet -r requirements.txt
  "$PY" -m pip install --quiet --no-deps -e .
  echo "$want" > "$stamp"
fi

if [ "${1:-}" = "--test" ]; then
  shift
  # Without paths: pyproject.toml's testpaths, the smoke copies under nbval (reference/smoke/) first, then tests/.
  # Headless kernels, as the runner's: no progress bars in the copies' cells.
  SEMSCALE_HEADLESS=1 "$PY" -m pytest "$@"
else
  "$PY" -m semscale.runner "$@"
fi
