#!/usr/bin/env bash
# MELD: official train/dev/test, 7 emotions; the test fold is scored (report weighted-F1 too:
# the test set is highly imbalanced).  No speaker gender, so only --task emotion.  See README.md.
#   ./run.sh --corpus_dir /db/MELD.Raw
#   ./run.sh --corpus_dir /db/MELD.Raw --local_data_opts "--audio_dir /scratch/meld_audio --nj 8"
set -e
set -u
set -o pipefail

corpus_dir=${MELD:-downloads/MELD.Raw}

./ser.sh \
    --corpus meld \
    --corpus_dir "${corpus_dir}" \
    --folds test \
    --frontend fbank_no_cmvn \
    --models "genser classifier" \
    "$@"
