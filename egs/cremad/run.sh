#!/usr/bin/env bash
# CREMA-D: 6 emotions, 91 actors, 7442 clips; 5 speaker-disjoint gender-balanced folds
# (local/folds.txt).  See README.md.
#   ./run.sh --corpus_dir /db/CREMA-D
#   ./run.sh --corpus_dir /db/CREMA-D --task gender
set -e
set -u
set -o pipefail

corpus_dir=${CREMAD:-downloads/CREMA-D}

./ser.sh \
    --corpus cremad \
    --corpus_dir "${corpus_dir}" \
    --local_data_opts "--fold_file local/folds.txt" \
    --frontend fbank_no_cmvn \
    --models "genser classifier" \
    "$@"
