#!/usr/bin/env bash
# utils/split_data.sh <data-dir> <num-to-split>: writes <data-dir>/split<N>/{1..N}/, each with
# a contiguous block of the sorted utterance ids (wav.scp, utt2*, segments subset; spk2utt
# rebuilt; labels.* copied).  Re-splits only when the data dir is newer than the split.
set -euo pipefail
if [ "${1:-}" = --per-utt ]; then
  shift  # Kaldi's flag; genser always splits by utterance
fi
if [ $# -ne 2 ]; then
  echo "Usage: $0 [--per-utt] <data-dir> <num-to-split>   e.g.: $0 data/all 4" >&2
  exit 1
fi
data=$1
nj=$2
split="${data}/split${nj}"
if [ -f "${split}/.done" ] && [ -z "$(find "${data}" -maxdepth 1 -type f -newer "${split}/.done" | head -n 1)" ]; then
  exit 0
fi
python="$("$(dirname "$0")/genser_python.sh")"
"${python}" -m genser.bin.split_data "${data}" "${nj}" > /dev/null
touch "${split}/.done"
