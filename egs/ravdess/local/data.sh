#!/usr/bin/env bash
# RAVDESS data preparation -> data/all: 8 emotions, 24 actors (odd male, even female), 6 folds of
# 4 actors. Fetches the Zenodo zips into --corpus_dir (default: $RAVDESS of db.sh) when it has no
# Actor_* folders.
# Options: python3 -m genser.bin.prepare_corpus ravdess --help (declared there once); later flags win.
set -euo pipefail
log() {
    local fname=${BASH_SOURCE[1]##*/}
    echo -e "$(date '+%Y-%m-%dT%H:%M:%S') (${fname}:${BASH_LINENO[0]}:${FUNCNAME[1]}) $*" >&2
}
SECONDS=0
. ./path.sh
. ./db.sh
log "$0 $*"
python3 -m genser.bin.prepare_corpus ravdess --corpus_dir "${RAVDESS}" --data_dir data/all "$@"
log "Successfully finished. [elapsed=${SECONDS}s]"
