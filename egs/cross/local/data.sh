#!/usr/bin/env bash
# Pools the data dirs of the corpus recipes (<egs_dir>/<corpus>/data/all) into data/all, ids
# prefixed by corpus; it does not prepare any corpus (their own recipes do, stage 0).
set -e
set -u
set -o pipefail

log() {
    local fname=${BASH_SOURCE[1]##*/}
    echo -e "$(date '+%Y-%m-%dT%H:%M:%S') (${fname}:${BASH_LINENO[0]}:${FUNCNAME[1]}) $*" >&2
}
SECONDS=0

corpora="emodb urdu"  # Corpora to pool.
egs_dir=..            # Where the corpus recipes live.
data_dir=data/all     # Output data dir.
max_per_class=0       # Keep at most this many utterances per corpus and label (0: all).
python=python3        # Python interpreter with genser installed.

help_message=$(cat <<HELP
Usage: $0 [--corpora "emodb urdu"] [options]
  Pools <egs_dir>/<corpus>/data/all of each corpus into ${data_dir} (utt2corpus, prefixed ids).
HELP
)

log "$0 $*"
. utils/parse_options.sh || exit 2
if [ $# -ne 0 ]; then
    log "${help_message}"
    exit 2
fi
if [ -f ./path.sh ]; then . ./path.sh; fi

sources=()
for c in ${corpora}; do
    if [ ! -f "${egs_dir}/${c}/data/all/wav.scp" ]; then
        log "Error: ${egs_dir}/${c}/data/all not found. Make it with its own recipe first:" \
            "(cd ${egs_dir}/${c} && ./run.sh --stage 0 --stop_stage 0 --corpus_dir <${c} copy>)"
        exit 1
    fi
    sources+=(--corpus "${c}=${egs_dir}/${c}/data/all")
done

log "Stage: pool ${corpora} -> ${data_dir}"
${python} -m genser.bin.cross_data pool "${sources[@]}" --out_dir "${data_dir}" \
    --max_per_class "${max_per_class}"
utils/validate_data_dir.sh "${data_dir}"
log "Successfully finished. [elapsed=${SECONDS}s]"
