#!/usr/bin/env bash
# Pools the data dirs of the corpus recipes (<egs_dir>/<corpus>/data/all) into data/all, ids
# prefixed by corpus; it does not prepare any corpus (their own recipes do, stage 0).
# Options: python3 -m genser.bin.cross_data pool --help (--corpora "emodb urdu", --egs_dir ..,
# --max_per_class N), declared there once. This recipe has no ser.sh stage 0, so it validates here.
set -euo pipefail
log() {
    local fname=${BASH_SOURCE[1]##*/}
    echo -e "$(date '+%Y-%m-%dT%H:%M:%S') (${fname}:${BASH_LINENO[0]}:${FUNCNAME[1]}) $*" >&2
}
SECONDS=0
. ./path.sh
log "$0 $*"
python3 -m genser.bin.cross_data pool --out_dir data/all "$@"
utils/validate_data_dir.sh data/all
log "Successfully finished. [elapsed=${SECONDS}s]"
