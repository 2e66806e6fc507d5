#!/usr/bin/env bash
# EmoDB: 7 emotions, 10 speakers, 535 utterances; leave-one-speaker-out (10 folds, fold = speaker).
# See README.md.  Examples:
#   ./run.sh --corpus_dir /db/emodb                       # fbank upstream, all 10 folds
#   ./run.sh --corpus_dir /db/emodb --task gender
#   ./run.sh --corpus_dir /db/emodb --frontend_conf <whisper.yaml>   # see README.md
# Without --corpus_dir (and $EMODB unset) stage 0 downloads the public archive to downloads/emodb.
set -e
set -u
set -o pipefail

corpus_dir=${EMODB:-downloads/emodb}

./ser.sh \
    --corpus emodb \
    --corpus_dir "${corpus_dir}" \
    --frontend fbank_no_cmvn \
    --models "genser classifier" \
    "$@"
