#!/usr/bin/env bash
# Generates the synthetic corpus (wavs under downloads/synth) and its Kaldi data dir in data/all;
# a re-run with the same options does nothing.
# Options: python3 -m genser.bin.make_synth --help (declared there once), e.g. --num_speakers 4.
set -euo pipefail
log() {
    local fname=${BASH_SOURCE[1]##*/}
    echo -e "$(date '+%Y-%m-%dT%H:%M:%S') (${fname}:${BASH_LINENO[0]}:${FUNCNAME[1]}) $*" >&2
}
SECONDS=0
. ./path.sh
log "$0 $*"
python3 -m genser.bin.make_synth --out_dir downloads/synth --data_dir data/all "$@"
log "Successfully finished. [elapsed=${SECONDS}s]"
