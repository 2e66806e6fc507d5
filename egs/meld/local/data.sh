#!/usr/bin/env bash
# MELD data preparation -> data/all: official train/dev/test (utt2fold), 7 emotions. Audio is
# taken from dia*_utt*.wav next to the clips when present, otherwise extracted from the mp4 clips
# with ffmpeg (16 kHz mono) into --audio_dir. --corpus_dir default: $MELD of db.sh.
# Options: python3 -m genser.bin.prepare_corpus meld --help (declared there once); later flags win.
set -euo pipefail
log() {
    local fname=${BASH_SOURCE[1]##*/}
    echo -e "$(date '+%Y-%m-%dT%H:%M:%S') (${fname}:${BASH_LINENO[0]}:${FUNCNAME[1]}) $*" >&2
}
SECONDS=0
. ./path.sh
. ./db.sh
log "$0 $*"
python3 -m genser.bin.prepare_corpus meld --corpus_dir "${MELD}" --data_dir data/all "$@"
log "Successfully finished. [elapsed=${SECONDS}s]"
