#!/usr/bin/env bash
# MELD data preparation -> data/all: official train/dev/test (utt2fold), 7 emotions.  Audio is
# taken from dia*_utt*.wav next to the clips when present, otherwise extracted from the mp4 clips
# with ffmpeg (16 kHz mono) into --audio_dir.
set -e
set -u
set -o pipefail

log() {
    local fname=${BASH_SOURCE[1]##*/}
    echo -e "$(date '+%Y-%m-%dT%H:%M:%S') (${fname}:${BASH_LINENO[0]}:${FUNCNAME[1]}) $*" >&2
}
SECONDS=0

corpus_dir=${MELD:-downloads/MELD.Raw}  # MELD.Raw: *_sent_emo.csv + clip folders (default: $MELD).
audio_dir=downloads/meld_audio  # Where audio extracted from the mp4 clips is kept.
drop_known_bad=true      # Drop the known missing/corrupt clips (dev dia110_utt7, train dia125_utt3).
nj=4                     # Parallel ffmpeg processes.
data_dir=data/all        # Output data dir.
allow_incomplete=false   # Warn instead of failing when counts differ or clips are missing (true|false).
python=python3           # Python interpreter with genser installed.

help_message=$(cat <<HELP
Usage: $0 --corpus_dir <MELD.Raw> [options]
  Prepares MELD (official train/dev/test, 7 emotions) into ${data_dir}.
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
    log "Error: ${corpus_dir} not found. Download and unpack" \
        "http://web.eecs.umich.edu/~mihalcea/downloads/MELD.Raw.tar.gz (and the train/dev/test" \
        "archives inside it), then pass --corpus_dir pointing at MELD.Raw or set MELD=..."
    exit 1
fi

log "Stage: ${corpus_dir} -> ${data_dir} (audio: ${audio_dir})"
${python} -m genser.bin.prepare_corpus meld --corpus_dir "${corpus_dir}" --data_dir "${data_dir}" \
    --audio_dir "${audio_dir}" --drop_known_bad "${drop_known_bad}" --nj "${nj}" \
    --allow_incomplete "${allow_incomplete}"
utils/validate_data_dir.sh "${data_dir}"
log "Successfully finished. [elapsed=${SECONDS}s]"
