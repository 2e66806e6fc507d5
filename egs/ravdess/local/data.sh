#!/usr/bin/env bash
# RAVDESS data preparation -> data/all: 8 emotions, 24 actors (odd male, even female), 6 folds of
# 4 consecutive actors.  Downloads the audio-only zips from Zenodo when --corpus_dir has no Actor_*.
set -e
set -u
set -o pipefail

log() {
    local fname=${BASH_SOURCE[1]##*/}
    echo -e "$(date '+%Y-%m-%dT%H:%M:%S') (${fname}:${BASH_LINENO[0]}:${FUNCNAME[1]}) $*" >&2
}
SECONDS=0

corpus_dir=${RAVDESS:-downloads/ravdess}  # Folder holding Actor_01..Actor_24 (default: $RAVDESS).
include_song=false       # Also use the song recordings (true|false).
download=true            # Fetch the Zenodo zips when --corpus_dir has no Actor_* (true|false).
download_url=https://zenodo.org/record/1188976/files  # Zenodo record of RAVDESS.
data_dir=data/all        # Output data dir.
allow_incomplete=false   # Warn instead of failing when counts differ (true|false).
python=python3           # Python interpreter with genser installed.

help_message=$(cat <<HELP
Usage: $0 [--corpus_dir <ravdess>] [options]
  Prepares RAVDESS (8 emotions, 6 folds of 4 actors) into ${data_dir}.
HELP
)

log "$0 $*"
. utils/parse_options.sh || exit 2
if [ $# -ne 0 ]; then
    log "${help_message}"
    exit 2
fi
if [ -f ./path.sh ]; then . ./path.sh; fi

if ! compgen -G "${corpus_dir}/Actor_*" > /dev/null && ! compgen -G "${corpus_dir}/*/Actor_*" > /dev/null; then
    if [ "${download}" != true ]; then
        log "Error: no Actor_* folders in ${corpus_dir}. Pass --corpus_dir pointing at the unpacked" \
            "Audio_Speech_Actors_01-24.zip, or --download true."
        exit 1
    fi
    zips=Audio_Speech_Actors_01-24.zip
    [ "${include_song}" = true ] && zips+=" Audio_Song_Actors_01-24.zip"
    mkdir -p "${corpus_dir}"
    for zip in ${zips}; do
        log "Stage: download ${download_url}/${zip} -> ${corpus_dir}"
        if ! curl -fsSL --retry 3 -o "${corpus_dir}/${zip}.part" "${download_url}/${zip}"; then
            rm -f "${corpus_dir}/${zip}.part"
            log "Error: could not download ${download_url}/${zip} (no network?). Download and" \
                "unzip it yourself, then pass --corpus_dir."
            exit 1
        fi
        mv "${corpus_dir}/${zip}.part" "${corpus_dir}/${zip}"
        unzip -q -o "${corpus_dir}/${zip}" -d "${corpus_dir}/${zip%.zip}"
    done
fi

log "Stage: ${corpus_dir} -> ${data_dir} (include_song=${include_song})"
${python} -m genser.bin.prepare_corpus ravdess --corpus_dir "${corpus_dir}" --data_dir "${data_dir}" \
    --include_song "${include_song}" --allow_incomplete "${allow_incomplete}"
utils/validate_data_dir.sh "${data_dir}"
log "Successfully finished. [elapsed=${SECONDS}s]"
