# The names that ser.sh derives (sourced by ser.sh and by recipes that must find its outputs,
# such as egs/cross): the "auto" feature pooling, the dump tag and the train_args tag.

# auto_feat_pooling FRONTEND_CONF FRONTEND: utterance statistics, the level at which the recipe
# defaults were chosen (docs/TRAINING.md): mean and std of hand-crafted features, the mean of each
# layer of a learned encoder, and frames for s3prl's "fbank", whose per-utterance CMVN makes every
# utterance's mean 0 and std 1. openSMILE functionals are utterance vectors already, stored as
# they are under "mean"; openSMILE low-level descriptors are hand-crafted frames (meanstd).
auto_feat_pooling() {
    case "${1:+conf}$2" in
        conf*) if grep -Eqs '^feature_level: *lld' "$1"; then echo meanstd; else echo mean; fi ;;
        fbank) echo none ;;
        fbank_no_cmvn|mfcc|mel|spectrogram|linear) echo meanstd ;;
        *) echo mean ;;
    esac
}

# default_feat_tag FRONTEND_CONF FRONTEND LAYERS POOLING DTYPE: the dump name under dump/.
default_feat_tag() {
    local tag
    if [ -n "$1" ]; then tag=$(basename "$1" .yaml); else tag=$2; fi
    [ "$3" != all ] && tag+="_l$(echo "$3" | tr ' ' '-')"
    [ "$4" != none ] && tag+="_$4"
    [ "$5" != float32 ] && tag+="_$5"
    echo "${tag}"
}

# train_args_tag TRAIN_ARGS: ESPnet's tag of overridden training arguments ("--epochs 80" -> _epochs80).
train_args_tag() {
    echo "$1" | sed -e 's/--/_/g' -e 's/[ =]//g' -e 's/[^A-Za-z0-9_.+-]//g'
}

# speed_perturb_factors_of FACTORS: the factors other than 1 (the original), one per line;
# refuses what is not a number.
speed_perturb_factors_of() {
    local f
    for f in $1; do
        case "${f}" in
            ''|*[!0-9.]*|*.*.*) echo "Error: --speed_perturb_factors must be numbers like '0.9 1.0 1.1', got '$1'" >&2; return 2 ;;
        esac
        awk -v f="${f}" 'BEGIN { exit !(f + 0 != 1) }' && echo "${f}"
    done
    return 0
}

# speed_perturb_tag FACTORS: the exp dir suffix of speed-perturbed training ("0.9 1.0 1.1" -> _sp0.9-1.1).
speed_perturb_tag() {
    local factors
    factors=$(speed_perturb_factors_of "$1") || return 2
    [ -n "${factors}" ] && echo "_sp$(echo "${factors}" | paste -sd-)"
    return 0
}

# feat_norm_tag FEAT_NORM RELEVANCE: the exp dir suffix of the model's normalisation (none -> "",
# speaker -> _cmvnspk, auto -> _cmvnauto, with _r<R> when a relevance is given, empty meaning
# genser-train's default); refuses other values. (Older recipes normalised the dumps: _spknorm, _normauto.)
feat_norm_tag() {
    case "$1" in
        none) return 0 ;;
        speaker|auto) ;;
        *) echo "Error: --feat_norm must be none, speaker or auto, got '$1'" >&2; return 2 ;;
    esac
    case "$2" in
        *[!0-9.]*|*.*.*) echo "Error: --cmvn_relevance must be a number >= 0, got '$2'" >&2; return 2 ;;
    esac
    local tag=_cmvnspk
    [ "$1" = auto ] && tag=_cmvnauto
    echo "${tag}${2:+_r$2}"
}
