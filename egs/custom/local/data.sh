#!/usr/bin/env bash
# Bring-your-own corpus -> data/all, from a CSV/TSV list with a header:
#   path,label,speaker[,gender][,fold]
# Relative paths are taken from the list's folder; without a fold column, --num_folds seeded
# speaker-disjoint (gender-balanced when gender is given) folds are made.
set -e
set -u
set -o pipefail

log() {
    local fname=${BASH_SOURCE[1]##*/}
    echo -e "$(date '+%Y-%m-%dT%H:%M:%S') (${fname}:${BASH_LINENO[0]}:${FUNCNAME[1]}) $*" >&2
}
SECONDS=0

csv=                     # The list (.csv comma-separated, .tsv tab-separated). Required.
corpus_dir=              # Same as --csv (what ser.sh --corpus_dir passes).
labels=                  # Label list in class order, e.g. neutral,happy,sad (default: sorted labels).
num_folds=5              # Speaker-disjoint folds to make when the list has no fold column.
seed=0                   # Seed of the fold assignment.
data_dir=data/all        # Output data dir.
allow_incomplete=false   # Skip listed files that are missing instead of failing (true|false).
python=python3           # Python interpreter with genser installed.

help_message=$(cat <<HELP
Usage: $0 --csv <list.csv|list.tsv> [options]
  Prepares your own corpus, listed in a CSV/TSV file, into ${data_dir}.
HELP
)

log "$0 $*"
. utils/parse_options.sh || exit 2
if [ $# -ne 0 ]; then
    log "${help_message}"
    exit 2
fi
if [ -f ./path.sh ]; then . ./path.sh; fi

csv=${csv:-${corpus_dir}}
if [ -z "${csv}" ] || [ ! -f "${csv}" ]; then
    log "Error: list '${csv}' not found; pass --csv FILE with header path,label,speaker[,gender][,fold]"
    exit 1
fi

log "Stage: ${csv} -> ${data_dir}"
${python} -m genser.bin.prepare_corpus custom --csv "${csv}" --data_dir "${data_dir}" \
    ${labels:+--labels "${labels}"} --num_folds "${num_folds}" --seed "${seed}" \
    --allow_incomplete "${allow_incomplete}"
utils/validate_data_dir.sh "${data_dir}"
log "Successfully finished. [elapsed=${SECONDS}s]"
