#!/usr/bin/env bash
# utils/genser_python.sh: prints the python interpreter that has genser installed, or explains
# how to install it (exit 1).  Order: $GENSER_PYTHON, the repository's tools/venv, `python3` on
# PATH (e.g. an activated venv or a path.sh).
set -euo pipefail

root="$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.." && pwd)"
for py in "${GENSER_PYTHON:-}" "${root}/tools/venv/bin/python" "$(command -v python3 || true)"; do
  if [ -z "${py}" ] || [ ! -x "${py}" ]; then continue; fi
  if "${py}" -c "import genser" >/dev/null 2>&1; then
    echo "${py}"
    exit 0
  fi
done
cat >&2 <<MSG
genser is not installed: no python with the genser package was found
(tried \$GENSER_PYTHON, ${root}/tools/venv/bin/python and python3 on PATH).
Install it with:   cd ${root} && make install      (or: bash tools/install.sh)
GPU users: install your CUDA torch into the python first, then run the same command.
MSG
exit 1
