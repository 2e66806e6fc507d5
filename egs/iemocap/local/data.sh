#!/usr/bin/env bash
# IEMOCAP data preparation -> data/all: 4-class (neu, hap+exc, ang, sad; 5531 utterances) or
# 6-class (--classes 6), leave-one-session-out folds 1..5. --corpus_dir default: $IEMOCAP of db.sh.
# Options: python3 -m genser.bin.prepare_corpus iemocap --help (declared there once); later flags win.
set -euo pipefail
log() {
    local fname=${BASH_SOURCE[1]##*/}
    echo -e "$(date '+%Y-%m-%dT%H:%M:%S') (${fname}:${BASH_LINENO[0]}:${FUNCNAME[1]}) $*" >&2
}
SECONDS=0
. ./path.sh
. ./db.sh
log "$0 $*"
python3 -m genser.bin.prepare_corpus iemocap --corpus_dir "${IEMOCAP}" --data_dir data/all "$@"
log "Successfully finished. [elapsed=${SECONDS}s]"
