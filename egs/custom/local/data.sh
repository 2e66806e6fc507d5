#!/usr/bin/env bash
# Your own corpus -> data/all, from a CSV/TSV list with the header path,label,speaker[,gender][,fold]
# (--csv FILE, or --corpus_dir FILE as ser.sh passes it).
# Options: python3 -m genser.bin.prepare_corpus custom --help (declared there once); later flags win.
set -euo pipefail
log() {
    local fname=${BASH_SOURCE[1]##*/}
    echo -e "$(date '+%Y-%m-%dT%H:%M:%S') (${fname}:${BASH_LINENO[0]}:${FUNCNAME[1]}) $*" >&2
}
SECONDS=0
. ./path.sh
. ./db.sh
log "$0 $*"
python3 -m genser.bin.prepare_corpus custom --data_dir data/all "$@"
log "Successfully finished. [elapsed=${SECONDS}s]"
