#!/usr/bin/env bash
# tools/install.sh: installs genser and its dependencies into an isolated Python environment.
#
#   bash tools/install.sh            # or: make install
#
# Which python (first match):
#   GENSER_PYTHON=/path/to/python    use that interpreter as it is (no venv is created)
#   GENSER_VENV=/path/to/venv        create/reuse a venv there
#   an activated venv ($VIRTUAL_ENV) install into it
#   otherwise                        create/reuse tools/venv (made with ${GENSER_BASE_PYTHON:-python3})
#
# torch: an importable torch is kept as it is (GPU users: install your CUDA torch first).
# Otherwise the CPU build ${GENSER_TORCH:-torch==2.13.0+cpu} is installed, from pip's configured
# sources, then, failing that, with the PyTorch CPU index as an extra source.  The installed
# torch is pinned in tools/constraints.txt and every pip call here uses that file, so pip never
# swaps it for a CUDA build or pulls nvidia-* packages.  Use the file for your own pip calls too:
#   pip install -c tools/constraints.txt <package>
#
# Idempotent: a stamp (hash of setup.py, this script, the python and the repository path) makes
# a second run return at once.  GENSER_FORCE_INSTALL=1 ignores the stamp.
set -euo pipefail

SECONDS=0
root="$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.." && pwd)"
cd "${root}"
log() {
  echo "$(date '+%Y-%m-%dT%H:%M:%S') (install.sh:${BASH_LINENO[0]}) $*" >&2
}
die() {
  echo "" >&2
  echo "install.sh: ERROR: $*" >&2
  exit 1
}

default_torch="torch==2.13.0+cpu"
# The optional extras (setup.py), at the versions tested with this torch and numpy 2.4 on
# Python 3.11: the openSMILE frontend (its wheel ships the SMILExtract library) and the ONNX
# export of the head. Pinned in tools/constraints.txt with torch.
extra_pins=("opensmile==2.6.0" "onnx==1.23.2" "onnxruntime==1.32.0")
torch_spec="${GENSER_TORCH:-${default_torch}}"
cpu_index="https://download.pytorch.org/whl/cpu"
# The voice-activity detector of genser-infer --segment vad (setup.py extra "vad"): its model
# file ships inside the wheel, nothing is downloaded at run time. 6.2.3 is the version tested
# with torch 2.13 (CPU); its only requirements are torch and packaging.
silero_vad_version="6.2.3"
constraints="${root}/tools/constraints.txt"

# ---- choose the python ---------------------------------------------------------------------
venv=""
if [ -n "${GENSER_PYTHON:-}" ]; then
  python="${GENSER_PYTHON}"
  command -v "${python}" >/dev/null 2>&1 || die "GENSER_PYTHON=${python} is not an executable"
  python="$(command -v "${python}")"
elif [ -n "${GENSER_VENV:-}" ]; then
  venv="${GENSER_VENV}"
elif [ -n "${VIRTUAL_ENV:-}" ]; then
  venv="${VIRTUAL_ENV}"
else
  venv="${root}/tools/venv"
fi
if [ -n "${venv}" ]; then
  python="${venv}/bin/python"
  if [ ! -x "${python}" ]; then
    base="${GENSER_BASE_PYTHON:-python3}"
    command -v "${base}" >/dev/null 2>&1 || die "no ${base} found: install Python >= 3.9 first"
    "${base}" -c 'import sys; sys.exit(sys.version_info < (3, 9))' \
      || die "$(${base} --version 2>&1) is too old: genser needs Python >= 3.9"
    log "Creating a virtual environment in ${venv} with $(command -v "${base}")"
    "${base}" -m venv "${venv}" \
      || die "'${base} -m venv' failed. On Debian/Ubuntu: apt-get install python3-venv"
  fi
fi

# ---- fast path: already installed ----------------------------------------------------------
prefix="$("${python}" -c 'import sys; print(sys.prefix if sys.prefix != sys.base_prefix else "")')"
if [ -n "${prefix}" ] && [ -w "${prefix}" ]; then
  stamp="${prefix}/.genser-installed"
else
  stamp="${root}/tools/install.done"
fi
stamp_hash="$({ cat "${root}/setup.py" "${root}/tools/install.sh"; echo "${python}"; echo "${root}"; } \
  | sha256sum | cut -d' ' -f1)"
if [ -z "${GENSER_FORCE_INSTALL:-}" ] && [ -f "${stamp}" ] && [ -f "${constraints}" ] \
   && [ "$(cat "${stamp}")" = "${stamp_hash}" ] \
   && (cd / && "${python}" -c "import genser") >/dev/null 2>&1; then
  echo "genser is already installed in ${python} (${SECONDS} s; GENSER_FORCE_INSTALL=1 reinstalls)"
  exit 0
fi

pip=("${python}" -m pip)
"${pip[@]}" --version >/dev/null 2>&1 || die "${python} has no pip (try: ${python} -m ensurepip)"
log "Installing genser into ${python} ($("${python}" --version 2>&1))"

# ---- torch ---------------------------------------------------------------------------------
torch_version="$("${python}" -c 'import torch; print(torch.__version__)' 2>/dev/null || true)"
if [ -n "${torch_version}" ]; then
  log "Keeping the installed torch ${torch_version}"
else
  log "No torch in ${python}: installing ${torch_spec} (CPU build)"
  # Pin it first, so that even this call cannot resolve to another build (a temporary file:
  # tools/constraints.txt is only rewritten once a torch is in place).
  torch_constraints="$(mktemp)"
  trap 'rm -f "${torch_constraints}"' EXIT
  echo "${torch_spec}" > "${torch_constraints}"
  if ! "${pip[@]}" install -c "${torch_constraints}" "${torch_spec}"; then
    log "Not found in pip's configured sources; trying the PyTorch CPU index as an extra source"
    "${pip[@]}" install -c "${torch_constraints}" --extra-index-url "${cpu_index}" "${torch_spec}" || die "
could not install ${torch_spec}.
genser installs a CPU-only torch by default so that pip does not pull CUDA builds and
several GB of nvidia-* packages. Install a torch yourself first, then run this again:
  CPU:  ${python} -m pip install '${torch_spec}' --index-url ${cpu_index}
  GPU:  follow https://pytorch.org/get-started/locally/ for your CUDA version
(or choose another build with GENSER_TORCH='torch==X.Y.Z+cpu' bash tools/install.sh)."
  fi
  torch_version="$("${python}" -c 'import torch; print(torch.__version__)')" \
    || die "torch was installed but does not import in ${python}"
fi

# ---- constraints: pin the torch we have (and a torchaudio that is already there) -----------
write_constraints() {
  local ta_version
  ta_version="$("${pip[@]}" show torchaudio 2>/dev/null | sed -n 's/^Version: //p' || true)"
  {
    echo "# Written by tools/install.sh: the torch build of ${python}."
    echo "# Use it for every pip call into this environment: pip install -c tools/constraints.txt ..."
    echo "torch==${torch_version}"
    if [ -n "${ta_version}" ]; then
      echo "torchaudio==${ta_version}"
    fi
    echo "silero-vad==${silero_vad_version}"
    printf '%s\n' "${extra_pins[@]}"
  } > "${constraints}.tmp"
  mv "${constraints}.tmp" "${constraints}"
  log "Wrote ${constraints}: $(grep -v '^#' "${constraints}" | tr '\n' ' ')"
}
write_constraints

# ---- genser and the rest -------------------------------------------------------------------
# [test]: pytest; [lint]: ruff and shellcheck, for tools/lint.sh (.ci/run); [vad]: silero-vad;
# [opensmile], [onnx]: the openSMILE frontend and the ONNX head.
"${pip[@]}" install -c "${constraints}" -e "${root}[test,lint,vad,opensmile,onnx]" torchaudio \
  || die "pip could not install genser's dependencies under ${constraints} (see the messages above)"
write_constraints  # now with the torchaudio that was chosen

# ---- checks --------------------------------------------------------------------------------
nvidia="$("${pip[@]}" list 2>/dev/null | grep -ci nvidia || true)"
if [ "${nvidia}" != 0 ]; then
  "${pip[@]}" list 2>/dev/null | grep -i nvidia >&2 || true
  if [[ "${torch_version}" == *+cpu* ]]; then
    die "${nvidia} nvidia package(s) were installed next to a CPU torch: this should not happen.
Remove them (${python} -m pip uninstall <names>) and report the pip command that pulled them."
  fi
  log "WARNING: ${nvidia} nvidia package(s) present: they came with your own torch ${torch_version}"
fi
(cd / && "${python}" -c "import genser, genser.compat; genser.compat.import_torchaudio(); import genser.vad; genser.vad.silero_model_path()") \
  || die "genser was installed but 'import genser' / torchaudio / the silero-vad model file fails in ${python}"
(cd / && "${python}" -c "import opensmile, onnx, onnxruntime") \
  || die "the opensmile/onnx extras were installed but do not import in ${python}"

echo "${stamp_hash}" > "${stamp}"
echo "genser installed in ${python}: torch ${torch_version}, pip list | grep -ci nvidia = ${nvidia}," \
  "elapsed ${SECONDS} s"
