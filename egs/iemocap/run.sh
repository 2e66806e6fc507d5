#!/usr/bin/env bash
# IEMOCAP 4-class (neu, hap+exc, ang, sad; 5531 utterances), leave-one-session-out (folds 1..5).
# See README.md.  Examples:
#   ./run.sh --corpus_dir /db/IEMOCAP_full_release
#   ./run.sh --corpus_dir /db/IEMOCAP_full_release --local_data_opts "--classes 6" --exp_tag 6class
#   ./run.sh --corpus_dir /db/IEMOCAP_full_release --task gender
set -e
set -u
set -o pipefail

corpus_dir=${IEMOCAP:-downloads/IEMOCAP_full_release}

./ser.sh \
    --corpus iemocap \
    --corpus_dir "${corpus_dir}" \
    --local_data_opts "--classes 4" \
    --frontend fbank_no_cmvn \
    --models "genser classifier" \
    "$@"
