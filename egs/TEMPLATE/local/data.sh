#!/usr/bin/env bash
# Data preparation of one corpus -> data/all (wav.scp utt2spk spk2utt utt2emo utt2gender utt2fold
# labels.* counts), shared by the corpus recipes (each links it as local/data.sh).
#
#   local/data.sh --corpus NAME [options]
#
# NAME is a corpus of genser.bin.prepare_corpus (emodb, urdu, iemocap, meld, cremad, ravdess,
# custom), which reads the corpus copy at --corpus_dir (default: the db.sh variable named after
# the corpus, e.g. $EMODB), or synth, which generates the synthetic corpus (genser.bin.make_synth)
# under downloads/synth. ser.sh passes the --corpus of the recipe's run.sh, and --data_dir.
# The other options are the Python script's (`python3 -m genser.bin.prepare_corpus NAME --help`,
# declared there once); later flags win.
set -euo pipefail
log() {
    local fname=${BASH_SOURCE[1]##*/}
    echo -e "$(date '+%Y-%m-%dT%H:%M:%S') (${fname}:${BASH_LINENO[0]}:${FUNCNAME[1]}) $*" >&2
}
SECONDS=0
if [ $# -lt 2 ] || [ "$1" != --corpus ]; then
    log "Usage: $0 --corpus NAME [options] (NAME: synth or a genser.bin.prepare_corpus corpus)"
    exit 2
fi
corpus=$2
shift 2
. ./path.sh
. ./db.sh
log "$0 --corpus ${corpus} $*"
case "${corpus}" in
    synth) prep=(genser.bin.make_synth --out_dir downloads/synth) ;;
    *)
        copy_var=${corpus^^}  # db.sh: EMODB, URDU, ...; none for custom
        prep=(genser.bin.prepare_corpus "${corpus}" ${!copy_var:+--corpus_dir "${!copy_var}"})
        ;;
esac
python3 -m "${prep[@]}" --data_dir data/all "$@"
log "Successfully finished. [elapsed=${SECONDS}s]"
