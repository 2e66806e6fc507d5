#!/usr/bin/env bash
# URDU: 4 emotions (EmoDB's names anger happiness sadness neutral), 29 very uneven speakers,
# 400 utterances; 5 speaker-disjoint folds balanced by utterance count. See README.md.  Examples:
#   ./run.sh --corpus_dir /db/urdu                        # fbank_no_cmvn (mean+std pooled), 5 folds
#   ./run.sh --corpus_dir /db/urdu --task gender
#   ./run.sh --corpus_dir /db/urdu --frontend_conf conf/frontend/whisper_base.yaml
set -e
set -u
set -o pipefail

corpus_dir=${URDU:-../../../shared/corpora/urdu}

./ser.sh \
    --corpus urdu \
    --corpus_dir "${corpus_dir}" \
    --frontend fbank_no_cmvn \
    --models "genser classifier" \
    "$@"
