#!/usr/bin/env bash
# The embedded default corpus: procedurally generated emotional speech (genser.synth), 8 speakers
# (4 female, 4 male), 4 emotions (neutral happy angry sad), 4 speaker-disjoint folds. It needs no
# download and runs every stage on 2 CPU cores in a few minutes:
#   ./run.sh                                   # stages 0-5
#   ./run.sh --stage 4 --nsteps "1 3 10"       # re-decode with other step counts, no retraining
#   ./run.sh --task gender                     # the same audio, speaker gender
set -euo pipefail

./ser.sh \
    --corpus synth \
    --nj 2 \
    --train_nj 2 \
    --frontend fbank_no_cmvn \
    --train_config conf/train.yaml \
    --models "genser classifier" \
    --nsteps "1 3" \
    "$@"
