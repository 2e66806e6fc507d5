#!/usr/bin/env bash
# URDU data preparation -> data/all: 4 emotions, 29 speakers, 5 utterance-balanced speaker folds.
# --corpus_dir (default: $URDU of db.sh) holds Angry/ Happy/ Neutral/ Sad/.
# Options: python3 -m genser.bin.prepare_corpus urdu --help (declared there once); later flags win.
set -euo pipefail
log() {
    local fname=${BASH_SOURCE[1]##*/}
    echo -e "$(date '+%Y-%m-%dT%H:%M:%S') (${fname}:${BASH_LINENO[0]}:${FUNCNAME[1]}) $*" >&2
}
SECONDS=0
. ./path.sh
. ./db.sh
log "$0 $*"
python3 -m genser.bin.prepare_corpus urdu --corpus_dir "${URDU}" --data_dir data/all "$@"
log "Successfully finished. [elapsed=${SECONDS}s]"
