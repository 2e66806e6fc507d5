#!/usr/bin/env bash
# IEMOCAP data preparation -> data/all: 4-class (neu, hap+exc, ang, sad; 5531 utterances) or
# 6-class setup, folds 1..5 = sessions (leave-one-session-out).  The corpus is licensed by USC
# SAIL (https://sail.usc.edu/iemocap/); there is no download stage.
set -e
set -u
set -o pipefail

log() {
    local fname=${BASH_SOURCE[1]##*/}
    echo -e "$(date '+%Y-%m-%dT%H:%M:%S') (${fname}:${BASH_LINENO[0]}:${FUNCNAME[1]}) $*" >&2
}
SECONDS=0

corpus_dir=${IEMOCAP:-downloads/IEMOCAP_full_release}  # IEMOCAP_full_release (default: $IEMOCAP).
classes=4                # 4: neu/hap(+exc)/ang/sad; 6: neu/hap/ang/sad/exc/fru.
data_dir=data/all        # Output data dir.
allow_incomplete=false   # Warn instead of failing when counts differ or wavs are missing (true|false).
python=python3           # Python interpreter with genser installed.

help_message=$(cat <<HELP
Usage: $0 --corpus_dir <IEMOCAP_full_release> [options]
  Prepares IEMOCAP (leave-one-session-out folds 1..5) into ${data_dir}.
HELP
)

log "$0 $*"
. utils/parse_options.sh || exit 2
if [ $# -ne 0 ]; then
    log "${help_message}"
    exit 2
fi
if [ -f ./path.sh ]; then . ./path.sh; fi

if [ ! -d "${corpus_dir}" ]; then
    log "Error: ${corpus_dir} not found. IEMOCAP is distributed by USC SAIL on request" \
        "(https://sail.usc.edu/iemocap/); pass --corpus_dir pointing at IEMOCAP_full_release" \
        "or set IEMOCAP=/path/to/IEMOCAP_full_release."
    exit 1
fi

log "Stage: ${corpus_dir} -> ${data_dir} (${classes} classes)"
${python} -m genser.bin.prepare_corpus iemocap --corpus_dir "${corpus_dir}" --data_dir "${data_dir}" \
    --classes "${classes}" --allow_incomplete "${allow_incomplete}"
utils/validate_data_dir.sh "${data_dir}"
log "Successfully finished. [elapsed=${SECONDS}s]"
