#!/usr/bin/env bash
# CREMA-D data preparation -> data/all: 6 emotions, 91 actors in the 5 speaker-disjoint folds of
# local/folds.txt (committed). --corpus_dir default: $CREMAD of db.sh.
# Options: python3 -m genser.bin.prepare_corpus cremad --help (declared there once); later flags win.
set -euo pipefail
log() {
    local fname=${BASH_SOURCE[1]##*/}
    echo -e "$(date '+%Y-%m-%dT%H:%M:%S') (${fname}:${BASH_LINENO[0]}:${FUNCNAME[1]}) $*" >&2
}
SECONDS=0
. ./path.sh
. ./db.sh
log "$0 $*"
python3 -m genser.bin.prepare_corpus cremad --corpus_dir "${CREMAD}" --data_dir data/all \
    --fold_file local/folds.txt "$@"
log "Successfully finished. [elapsed=${SECONDS}s]"
