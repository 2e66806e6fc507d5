#!/usr/bin/env bash
# RAVDESS speech: 8 emotions, 24 actors, 1440 files; 6 folds of 4 consecutive actors.
# See README.md.
#   ./run.sh --corpus_dir /db/ravdess
#   ./run.sh --corpus_dir /db/ravdess --local_data_opts "--include_song true" --exp_tag song
#   ./run.sh --task gender
# Without --corpus_dir (and $RAVDESS unset) stage 0 downloads the Zenodo zip to downloads/ravdess.
set -e
set -u
set -o pipefail

corpus_dir=${RAVDESS:-downloads/ravdess}

./ser.sh \
    --corpus ravdess \
    --corpus_dir "${corpus_dir}" \
    --frontend fbank_no_cmvn \
    --models "genser classifier" \
    "$@"
