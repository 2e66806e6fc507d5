#!/usr/bin/env bash
# Runs the train x test matrix of egs/cross for one feature setting: rows emodb, urdu and
# emodb+urdu, columns emodb and urdu, Gen-SER and the classifier side by side. In-corpus cells
# (the test corpus is also trained on) use its speaker-disjoint folds and --seeds; cross-corpus
# cells have one test fold, so they are cheap and get the extra seeds of --cross_seeds.
#   local/matrix.sh --frontend_conf conf/frontend/whisper_base.yaml
#   local/matrix.sh --label_set full --taxonomy hierarchical --rows "emodb;emodb urdu"
set -e
set -u
set -o pipefail

log() {
    local fname=${BASH_SOURCE[1]##*/}
    echo -e "$(date '+%Y-%m-%dT%H:%M:%S') (${fname}:${BASH_LINENO[0]}:${FUNCNAME[1]}) $*" >&2
}
SECONDS=0

rows="emodb;urdu;emodb urdu"  # Training sets, separated by ';'.
cols="emodb urdu"     # Test corpora.
label_set=shared      # shared | full.
taxonomy=flat         # flat | hierarchical.
frontend=fbank_no_cmvn  # s3prl upstream.
frontend_conf=        # YAML frontend spec; overrides --frontend.
feat_norm=corpus      # corpus | none (as run.sh: per-corpus standardisation, transductive at corpus level).
seeds=0               # Seeds of the in-corpus cells.
cross_seeds="0 1 2"   # Seeds of the cross-corpus cells.
train_args=           # Extra arguments for genser.bin.train.
cells=all             # all | cross (only cells whose test corpus is not trained on) | in.
prep=true             # Run stages 1-2 (pool, features) first (true|false).

help_message="Usage: $0 [options]   (runs ./run.sh once per cell, then rescores the matrix)"
. utils/parse_options.sh || exit 2

opts=(--label_set "${label_set}" --taxonomy "${taxonomy}" --frontend "${frontend}"
      --frontend_conf "${frontend_conf}" --feat_norm "${feat_norm}" --train_args "${train_args}")
IFS=';' read -r -a row_list <<< "${rows}"
# Features of the pooled corpora first (a no-op when the dump is complete).
if [ "${prep}" = true ]; then
    ./run.sh --stage 1 --stop_stage 2 "${opts[@]}"
fi
for row in "${row_list[@]}"; do
    for col in ${cols}; do
        if [[ " ${row} " == *" ${col} "* ]]; then kind=in; s=${seeds}; else kind=cross; s=${cross_seeds}; fi
        [ "${cells}" != all ] && [ "${cells}" != "${kind}" ] && continue
        log "cell ${row} -> ${col} (seeds ${s})"
        ./run.sh --stage 3 --stop_stage 4 --train_sets "${row}" --test_sets "${col}" --seeds "${s}" "${opts[@]}"
    done
done
./run.sh --stage 5 "${opts[@]}"
log "Successfully finished. [elapsed=${SECONDS}s]"
