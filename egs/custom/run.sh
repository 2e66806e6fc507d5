#!/usr/bin/env bash
# Bring your own corpus: a CSV/TSV list with header path,label,speaker[,gender][,fold].
# See README.md.
#   ./run.sh --corpus_dir /db/mine/list.csv
#   ./run.sh --corpus_dir /db/mine/list.tsv --local_data_opts "--labels neutral,happy,sad --num_folds 4"
#   ./run.sh --corpus_dir /db/mine/list.csv --task gender      # needs a gender column
set -e
set -u
set -o pipefail

if [ -z "${CUSTOM_CSV:-}" ] && ! printf '%s\n' "$@" | grep -q -- '^--corpus_dir'; then
    echo "Usage: $0 --corpus_dir <list.csv|list.tsv> [ser.sh options] (or set CUSTOM_CSV)" >&2
    exit 2
fi

./ser.sh \
    --corpus custom \
    ${CUSTOM_CSV:+--corpus_dir "${CUSTOM_CSV}"} \
    --frontend fbank_no_cmvn \
    --models "genser classifier" \
    "$@"
