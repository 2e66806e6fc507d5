#!/usr/bin/env bash
# URDU data preparation -> data/all (wav.scp utt2spk spk2utt utt2emo utt2gender utt2fold labels.*
# counts).  The corpus has no public download URL that works without a login, so --corpus_dir
# must point at a copy.
set -e
set -u
set -o pipefail

log() {
    local fname=${BASH_SOURCE[1]##*/}
    echo -e "$(date '+%Y-%m-%dT%H:%M:%S') (${fname}:${BASH_LINENO[0]}:${FUNCNAME[1]}) $*" >&2
}
SECONDS=0

corpus_dir=${URDU:-../../../shared/corpora/urdu}  # URDU root holding Angry/ Happy/ Neutral/ Sad/.
data_dir=data/all                     # Output data dir.
num_folds=5                           # Speaker-disjoint folds, balanced by utterance count.
allow_incomplete=false                # Warn instead of failing when counts differ (true|false).
python=python3                        # Python interpreter with genser installed.

help_message=$(cat <<HELP
Usage: $0 [--corpus_dir <urdu>] [options]
  Prepares URDU (4 emotions, 29 speakers, ${num_folds} utterance-balanced speaker folds) into ${data_dir}.
HELP
)

log "$0 $*"
. utils/parse_options.sh || exit 2
if [ $# -ne 0 ]; then
    log "${help_message}"
    exit 2
fi
if [ -f ./path.sh ]; then . ./path.sh; fi

for emo in Angry Happy Neutral Sad; do
    if [ ! -d "${corpus_dir}/${emo}" ]; then
        log "Error: ${corpus_dir}/${emo} not found. Pass --corpus_dir pointing at your URDU copy" \
            "(the folder that holds Angry/ Happy/ Neutral/ Sad/), or set \$URDU."
        exit 1
    fi
done

log "Stage: ${corpus_dir} -> ${data_dir}"
${python} -m genser.bin.prepare_corpus urdu --corpus_dir "${corpus_dir}" --data_dir "${data_dir}" \
    --num_folds "${num_folds}" --allow_incomplete "${allow_incomplete}"
utils/validate_data_dir.sh "${data_dir}"
log "Successfully finished. [elapsed=${SECONDS}s]"
