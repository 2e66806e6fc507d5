#!/usr/bin/env bash
# Static checks of the repository (run by .ci/run): ruff on the Python (ruff.toml: pyflakes-class
# errors), shellcheck on every tracked shell script. tools/install.sh installs both (the "lint"
# extra of setup.py).
set -euo pipefail
cd "$(dirname "$0")/.."
# ruff and shellcheck sit beside the python that has genser (utils/genser_python.sh finds it).
PATH=$(dirname "$(utils/genser_python.sh)"):${PATH}
export PATH

ruff check --quiet .

# Every tracked regular file (recipe links are checked through their targets) that is a *.sh or
# starts with a bash shebang. Sourced files (path.sh, cmd.sh, db.sh) have no shebang: -s bash.
# -P: a sourced ./path.sh is found beside the script or, for local/*.sh, one folder up.
scripts=()
while IFS= read -r f; do
    [ -f "${f}" ] && [ ! -L "${f}" ] || continue
    case "${f}" in
        *.sh) scripts+=("${f}") ;;
        *) if head -n 1 "${f}" | grep -qE '^#!.*\b(ba)?sh\b'; then scripts+=("${f}"); fi ;;
    esac
done < <(git ls-files)
shellcheck -s bash -x -P SCRIPTDIR -P SCRIPTDIR/.. "${scripts[@]}"
echo "lint: ruff and shellcheck clean (${#scripts[@]} shell scripts)"
