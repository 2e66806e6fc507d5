#!/usr/bin/env bash
# EmoDB data preparation -> data/all (wav.scp utt2spk spk2utt utt2emo utt2gender utt2fold labels.*
# counts).  Downloads the public archive into --corpus_dir when it has no wav/ folder.
set -e
set -u
set -o pipefail

log() {
    local fname=${BASH_SOURCE[1]##*/}
    echo -e "$(date '+%Y-%m-%dT%H:%M:%S') (${fname}:${BASH_LINENO[0]}:${FUNCNAME[1]}) $*" >&2
}
SECONDS=0

corpus_dir=${EMODB:-downloads/emodb}  # EmoDB root holding wav/ (default: $EMODB or downloads/emodb).
download=true                         # Fetch the archive when --corpus_dir has no wav/ (true|false).
download_url=http://emodb.bilderbar.info/download/download.zip  # Public EmoDB archive.
data_dir=data/all                     # Output data dir.
allow_incomplete=false                # Warn instead of failing when counts differ (true|false).
python=python3                        # Python interpreter with genser installed.

help_message=$(cat <<HELP
Usage: $0 [--corpus_dir <emodb>] [options]
  Prepares EmoDB (7 emotions, 10 speakers, leave-one-speaker-out folds) into ${data_dir}.
HELP
)

log "$0 $*"
. utils/parse_options.sh || exit 2
if [ $# -ne 0 ]; then
    log "${help_message}"
    exit 2
fi
if [ -f ./path.sh ]; then . ./path.sh; fi

if [ ! -d "${corpus_dir}/wav" ]; then
    if [ "${download}" != true ]; then
        log "Error: ${corpus_dir}/wav not found. Pass --corpus_dir pointing at your EmoDB copy" \
            "(the folder that holds wav/), or --download true to fetch ${download_url}."
        exit 1
    fi
    log "Stage: download ${download_url} -> ${corpus_dir}"
    mkdir -p "${corpus_dir}"
    zip=${corpus_dir}/download.zip
    if command -v curl > /dev/null; then
        fetch=(curl -fsSL --retry 3 -o "${zip}.part" "${download_url}")
    elif command -v wget > /dev/null; then
        fetch=(wget -q -O "${zip}.part" "${download_url}")
    else
        log "Error: neither curl nor wget is installed; download ${download_url} yourself," \
            "unzip it and pass --corpus_dir"
        exit 1
    fi
    if ! "${fetch[@]}"; then
        rm -f "${zip}.part"
        log "Error: could not download ${download_url} (no network?). Download and unzip it" \
            "elsewhere, then pass --corpus_dir pointing at the folder that holds wav/."
        exit 1
    fi
    mv "${zip}.part" "${zip}"
    unzip -q -o "${zip}" -d "${corpus_dir}"
    if [ ! -d "${corpus_dir}/wav" ]; then
        log "Error: ${zip} has no wav/ folder; is ${download_url} the EmoDB archive?"
        exit 1
    fi
fi

log "Stage: ${corpus_dir} -> ${data_dir}"
${python} -m genser.bin.prepare_corpus emodb --corpus_dir "${corpus_dir}" --data_dir "${data_dir}" \
    --allow_incomplete "${allow_incomplete}"
utils/validate_data_dir.sh "${data_dir}"
log "Successfully finished. [elapsed=${SECONDS}s]"
