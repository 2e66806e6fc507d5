#!/usr/bin/env bash
# CREMA-D data preparation -> data/all: 6 emotions, 91 actors, gender from VideoDemographics.csv,
# 5 speaker-disjoint gender-balanced folds from local/folds.txt (made by local/make_folds.py).
set -e
set -u
set -o pipefail

log() {
    local fname=${BASH_SOURCE[1]##*/}
    echo -e "$(date '+%Y-%m-%dT%H:%M:%S') (${fname}:${BASH_LINENO[0]}:${FUNCNAME[1]}) $*" >&2
}
SECONDS=0

corpus_dir=${CREMAD:-downloads/CREMA-D}  # CREMA-D root: AudioWAV/ + VideoDemographics.csv (default: $CREMAD).
fold_file=local/folds.txt  # Actor -> fold assignment (committed).
data_dir=data/all          # Output data dir.
allow_incomplete=false     # Warn instead of failing when counts differ (true|false).
python=python3             # Python interpreter with genser installed.

help_message=$(cat <<HELP
Usage: $0 --corpus_dir <CREMA-D> [options]
  Prepares CREMA-D (6 emotions, 5 speaker-disjoint folds) into ${data_dir}.
HELP
)

log "$0 $*"
. utils/parse_options.sh || exit 2
if [ $# -ne 0 ]; then
    log "${help_message}"
    exit 2
fi
if [ -f ./path.sh ]; then . ./path.sh; fi

if [ ! -d "${corpus_dir}/AudioWAV" ]; then
    log "Error: ${corpus_dir}/AudioWAV not found. Clone https://github.com/CheyneyComputerScience/CREMA-D" \
        "with git-lfs (git lfs pull fetches the audio), then pass --corpus_dir or set CREMAD=..."
    exit 1
fi

log "Stage: ${corpus_dir} -> ${data_dir} (folds: ${fold_file})"
${python} -m genser.bin.prepare_corpus cremad --corpus_dir "${corpus_dir}" --data_dir "${data_dir}" \
    --fold_file "${fold_file}" --allow_incomplete "${allow_incomplete}"
utils/validate_data_dir.sh "${data_dir}"
log "Successfully finished. [elapsed=${SECONDS}s]"
