# Where this site keeps its corpora and models, as in ESPnet's db.sh (sourced by local/data.sh and
# ser.sh). Edit the paths for your machine, or set the variables in the environment. A relative
# path is relative to the recipe folder (egs/<corpus>).
# shellcheck shell=bash disable=SC2034

# The shared folder beside the repository, if this site has one (corpora/ and models/ inside).
GENSER_SHARED=${GENSER_SHARED:-$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/../../.." && pwd)/shared}

EMODB=${EMODB:-downloads/emodb}                  # holds wav/ (local/data.sh fetches it when absent)
URDU=${URDU:-${GENSER_SHARED}/corpora/urdu}      # holds Angry/ Happy/ Neutral/ Sad/
IEMOCAP=${IEMOCAP:-downloads/IEMOCAP_full_release}
MELD=${MELD:-downloads/MELD.Raw}
CREMAD=${CREMAD:-downloads/CREMA-D}              # holds AudioWAV/ and VideoDemographics.csv
RAVDESS=${RAVDESS:-downloads/ravdess}            # holds Actor_01..Actor_24 (fetched when absent)

# Models: conf/frontend/whisper_base*.yaml name ${WHISPER_BASE} as their path.
WHISPER_BASE=${WHISPER_BASE:-${GENSER_SHARED}/models/whisper-base}
export WHISPER_BASE
