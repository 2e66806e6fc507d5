#!/usr/bin/env bash
# EmoDB data preparation -> data/all (wav.scp utt2spk spk2utt utt2emo utt2gender utt2fold labels.*
# counts): 7 emotions, 10 speakers, leave-one-speaker-out folds. Fetches the public archive into
# --corpus_dir (default: $EMODB of db.sh) when it has no wav/ folder.
# Options: python3 -m genser.bin.prepare_corpus emodb --help (declared there once); later flags win.
set -euo pipefail
log() {
    local fname=${BASH_SOURCE[1]##*/}
    echo -e "$(date '+%Y-%m-%dT%H:%M:%S') (${fname}:${BASH_LINENO[0]}:${FUNCNAME[1]}) $*" >&2
}
SECONDS=0
. ./path.sh
. ./db.sh
log "$0 $*"
python3 -m genser.bin.prepare_corpus emodb --corpus_dir "${EMODB}" --data_dir data/all "$@"
log "Successfully finished. [elapsed=${SECONDS}s]"
