#!/usr/bin/env bash
# Generates the synthetic corpus (wavs under ${corpus_dir}) and its Kaldi data dir in data/all.
set -euo pipefail
log() {
    local fname=${BASH_SOURCE[1]##*/}
    echo -e "$(date '+%Y-%m-%dT%H:%M:%S') (${fname}:${BASH_LINENO[0]}:${FUNCNAME[1]}) $*" >&2
}

corpus_dir=downloads/synth  # Where the generated wavs go.
num_speakers=8              # Speakers, half of them female.
utts_per_class=10           # Utterances per speaker and emotion.
num_folds=4                 # Speaker-disjoint folds.
seed=0                      # Generator seed: the same seed gives the same corpus, byte for byte.

. utils/parse_options.sh || exit 2
. ./path.sh

if [ -f data/all/.done ] && [ -f "${corpus_dir}/.done" ] && cmp -s data/all/.done "${corpus_dir}/.done"; then
    log "data/all is up to date (${corpus_dir}); skipping generation"
    exit 0
fi
log "Generating the synthetic corpus: ${num_speakers} speakers x 4 emotions x ${utts_per_class} -> ${corpus_dir}"
python3 -m genser.bin.make_synth --out_dir "${corpus_dir}" --data_dir data/all \
    --num_speakers "${num_speakers}" --utts_per_class "${utts_per_class}" --num_folds "${num_folds}" \
    --seed "${seed}"
echo "speakers=${num_speakers} utts=${utts_per_class} folds=${num_folds} seed=${seed}" > "${corpus_dir}/.done"
cp "${corpus_dir}/.done" data/all/.done
utils/validate_data_dir.sh data/all
log "Successfully finished."
