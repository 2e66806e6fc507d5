# Puts genser's environment on PATH for the recipe scripts (sourced by ser.sh and local/*.sh).
# Resolves the per-corpus symlink to egs/TEMPLATE/path.sh, two levels below the repository root.
GENSER_ROOT=$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/../.." && pwd)
export GENSER_ROOT
if [ -z "${VIRTUAL_ENV:-}" ] && [ -f "${GENSER_ROOT}/tools/venv/bin/activate" ]; then
    # shellcheck disable=SC1091
    . "${GENSER_ROOT}/tools/venv/bin/activate"
fi
if ! python3 -c "import genser" 2>/dev/null; then
    echo "Error: genser is not installed in this environment ($(command -v python3))." >&2
    echo "Install it once with:  make -C ${GENSER_ROOT} install   (or bash ${GENSER_ROOT}/tools/install.sh)" >&2
    exit 1
fi
export PATH=${GENSER_ROOT}/utils:${PATH}
export PYTHONUNBUFFERED=1
# Parallel jobs (run.pl) already fill the cores; OpenMP threads on top of them oversubscribe and
# spin. Measured here on 2 busy cores: 5 s with one thread against 200 s with two.
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
# Sorting and joins in the data dirs assume byte order, as in Kaldi.
export LC_ALL=C
