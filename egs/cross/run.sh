#!/usr/bin/env bash
# Cross-corpus and multi-corpus SER: trains on the corpora of --train_sets and tests on each
# corpus of --test_sets, combining the data dirs that the corpus recipes wrote
# (../<corpus>/data/all); no corpus is prepared again.  See README.md.  Examples:
#   ./run.sh --train_sets emodb --test_sets "urdu emodb"            # fbank_no_cmvn, 4 shared classes
#   ./run.sh --train_sets "emodb urdu" --test_sets "emodb urdu" --frontend_conf conf/frontend/whisper_base.yaml
#   ./run.sh --train_sets "emodb urdu" --test_sets urdu --label_set full --taxonomy hierarchical
#   ./run.sh --stage 5                                              # rescore the whole matrix
# Options after `--` go to ../TEMPLATE/ser.sh unchanged (e.g. -- --device cuda --seed 1).
set -e
set -u
set -o pipefail

log() {
    local fname=${BASH_SOURCE[1]##*/}
    echo -e "$(date '+%Y-%m-%dT%H:%M:%S') (${fname}:${BASH_LINENO[0]}:${FUNCNAME[1]}) $*" >&2
}
SECONDS=0

# Stages of this recipe (ser.sh runs its own stages 1 and 2-5 inside stages 2 and 4).
stage=1               # First stage: 1 pool, 2 features, 3 cell data dirs, 4 ser.sh 2-5, 5 matrix.
stop_stage=100        # Last stage to run.
python=python3        # Python interpreter (path.sh puts the genser venv first on PATH).

# Data options
corpora="emodb urdu"  # Corpora pooled in data/all (features are extracted once, for all of them).
egs_dir=..            # Where the corpus recipes live: their data dirs are <egs_dir>/<corpus>/data/all.
train_sets=emodb      # Training corpora of this run, e.g. "emodb" or "emodb urdu".
test_sets=urdu        # Test corpora, one cell each; a corpus also trained on is tested by its own folds.
label_set=shared      # shared (the shared classes only) | full (every class of the training corpora).
taxonomy=flat         # flat | hierarchical (family + leaf code; needs --label_set full).
shared_labels="neutral happy angry sad"  # The shared taxonomy (classes mapped elsewhere are dropped).
label_map_dir=conf/label_map  # <corpus>.txt: "corpus_label shared_label" lines.
max_per_class=0       # Keep at most this many utterances per corpus and label (0: all; for tests).
pool=all              # all | mapped: pool (and extract) every clip of the corpora, or only those whose label maps
                      # onto a shared class (--label_set shared). all keeps the per-corpus moments label-free.

# Feature options (passed to ser.sh; the pooled dump is shared by every cell)
frontend=fbank_no_cmvn  # s3prl upstream name (fbank_no_cmvn: s3prl fbank without per-utterance CMVN).
frontend_conf=        # YAML frontend spec, e.g. conf/frontend/whisper_base.yaml; overrides --frontend.
feat_pooling=auto     # none | mean | meanstd | auto (as ser.sh: meanstd for fbank_no_cmvn, mean for encoders).
feat_tag=             # Name of the feature dump; derived from the frontend when empty.
feat_norm=corpus      # corpus | none: standardise features per corpus with the moments of all its unlabelled
                      # clips, the test corpus's included (transductive at corpus level; tag _cnorm).
nj=1                  # Feature-extraction jobs.

# Training and decoding options (passed to ser.sh)
train_config=conf/train.yaml  # Base training YAML; each cell's config is generated from it.
models="genser classifier"    # Models trained side by side.
train_nj=1            # Folds trained at the same time.
train_args=           # Extra arguments for genser.bin.train (e.g. "--epochs 5").
seeds=0               # Random seeds, e.g. "0 1 2": the matrices show the mean over seeds.
nsteps=1              # Gen-SER sampling steps (the first value fills the matrix).
matrix_out=exp/matrix/RESULTS.md  # The train x test matrices of every cell in exp/.

help_message=$(cat <<HELP
Usage: $0 [options] [-- ser.sh options]
  Cross-corpus / multi-corpus SER over the data dirs of the corpus recipes in ${egs_dir}.
HELP
)

log "$0 $*"
# (one line: --help lists the options above the line that sources parse_options.sh)
run_args=$(printf '%q ' "$0" "$@"); . utils/parse_options.sh || exit 2
ser_opts=("$@")  # whatever followed `--`
. ./path.sh
. ./db.sh

case "${label_set}" in shared|full) ;; *) log "Error: --label_set must be shared or full, got '${label_set}'"; exit 2 ;; esac
case "${taxonomy}" in flat|hierarchical) ;; *) log "Error: --taxonomy must be flat or hierarchical, got '${taxonomy}'"; exit 2 ;; esac
if [ "${taxonomy}" = hierarchical ] && [ "${label_set}" != full ]; then
    log "Error: --taxonomy hierarchical needs --label_set full (its leaves are the corpus classes)"
    exit 2
fi
for c in ${train_sets} ${test_sets}; do
    if ! [[ " ${corpora} " == *" ${c} "* ]]; then
        log "Error: corpus '${c}' is not in --corpora '${corpora}' (the pooled corpora)"
        exit 2
    fi
done

# The pooling and tag ser.sh derives (egs/TEMPLATE/names.sh), fixed here so that every cell reads
# the one pooled dump.
# shellcheck source=../TEMPLATE/names.sh
. "$(dirname "$(readlink -f ser.sh)")/names.sh"
[ "${feat_pooling}" = auto ] && feat_pooling=$(auto_feat_pooling "${frontend_conf}" "${frontend}")
[ -z "${feat_tag}" ] && feat_tag=$(default_feat_tag "${frontend_conf}" "${frontend}" all "${feat_pooling}" float32)
case "${feat_norm}" in none) cell_feat_tag=${feat_tag} ;; corpus) cell_feat_tag=${feat_tag}_cnorm ;;
    *) log "Error: --feat_norm must be none or corpus, got '${feat_norm}'"; exit 2 ;; esac
# Per-speaker CMVN is ser.sh's default within a corpus; across corpora the test corpus is the
# fold, and normalisation is per corpus (--feat_norm above), so ser.sh's is off here.
# Each cell's model is trained without speaker normalisation, so every protocol decodes alike:
# only clip is decoded.
feat_opts=(--feat_pooling "${feat_pooling}" --feat_norm none --protocols clip)
if [ -n "${frontend_conf}" ]; then feat_opts+=(--frontend_conf "${frontend_conf}"); else feat_opts+=(--frontend "${frontend}"); fi
train_name=$(echo ${train_sets} | tr ' ' '+')
# ser.sh names its exp dir exp/<task>_<feat_tag>_<config name><train_args tag>_<exp_tag> (the
# ESPnet idiom); the cell config is named after the taxonomy, so the dir is known here too.
args_tag=$(train_args_tag "${train_args}")
mkdir -p exp
echo "${run_args}" >> exp/commands.log

if [ ${stage} -le 1 ] && [ ${stop_stage} -ge 1 ]; then
    log "Stage 1: pool ${corpora} -> data/all"
    # --pool mapped: the shared-label cells' unmapped classes are not pooled (nor extracted) at all
    pool_opts=()
    case "${pool}" in
        all) ;;
        mapped) pool_opts=(--label_map_dir "${label_map_dir}" --shared_labels "${shared_labels}") ;;
        *) log "Error: --pool must be all or mapped, got '${pool}'"; exit 2 ;;
    esac
    local/data.sh --corpora "${corpora}" --egs_dir "${egs_dir}" --max_per_class "${max_per_class}" \
        "${pool_opts[@]}"
fi

if [ ${stage} -le 2 ] && [ ${stop_stage} -ge 2 ]; then
    log "Stage 2: features of the pooled corpora (${feat_tag}) -> dump/${feat_tag}"
    ./ser.sh --stage 1 --stop_stage 1 --data_dir data/all --nj "${nj}" --feat_tag "${feat_tag}" \
        "${feat_opts[@]}" "${ser_opts[@]}"
    if [ ! -f "dump/${feat_tag}/feats.scp" ]; then  # ser.sh derived another tag
        log "Error: ser.sh did not write dump/${feat_tag}/feats.scp; update the tag rule in $0"
        exit 1
    fi
    if [ "${feat_norm}" = corpus ]; then
        log "Stage 2: per-corpus standardisation dump/${feat_tag} -> dump/${cell_feat_tag}"
        ${python} -m genser.bin.cross_data norm --feat_dir "dump/${feat_tag}" --data_dir data/all \
            --out_dir "dump/${cell_feat_tag}"
    fi
fi

for test_set in ${test_sets}; do
    cell=${train_name}__${test_set}_${label_set}
    # Outside the cell dir (which stage 3 replaces whole when it changes); named after the
    # taxonomy because ser.sh names the exp dir after the config.
    config=exp/conf/${cell}/${taxonomy}.yaml
    expdir=exp/emotion_${cell_feat_tag}_${taxonomy}${args_tag}_${cell}
    if [ ${stage} -le 3 ] && [ ${stop_stage} -ge 3 ]; then
        log "Stage 3: cell ${train_name} -> ${test_set} (${label_set} labels, ${taxonomy}) -> data/${cell}"
        ${python} -m genser.bin.cross_data cell --pool_dir data/all --train_sets "${train_sets}" \
            --test_set "${test_set}" --label_map_dir "${label_map_dir}" --label_set "${label_set}" \
            --shared_labels "${shared_labels}" --out_dir "data/${cell}" \
            --base_config "${train_config}" --config_out "${config}" \
            --taxonomy "${taxonomy}"
        utils/validate_data_dir.sh "data/${cell}"
        # What the matrix scorer needs to place and score this experiment.
        mkdir -p "${expdir}"
        cp "data/${cell}/cell.yaml" "data/${cell}/label2shared" "${expdir}/"
        printf 'taxonomy: %s\nfeat_tag: %s\ndata_dir: %s\n' "${taxonomy}" "${cell_feat_tag}" "data/${cell}" \
            >> "${expdir}/cell.yaml"
    fi
    if [ ${stage} -le 4 ] && [ ${stop_stage} -ge 4 ]; then
        log "Stage 4: ser.sh stages 2-5 for ${cell} (${taxonomy}) -> ${expdir}"
        if [ ! -f "${expdir}/cell.yaml" ]; then
            log "Error: ${expdir}/cell.yaml is missing; it is made by stage 3 (run with --stage 3)"
            exit 1
        fi
        ./ser.sh --stage 2 --stop_stage 5 --data_dir "data/${cell}" --exp_tag "${cell}" \
            --train_config "${config}" --models "${models}" --seeds "${seeds}" \
            --train_nj "${train_nj}" --train_args "${train_args}" --nsteps "${nsteps}" \
            --feat_tag "${cell_feat_tag}" "${feat_opts[@]}" "${ser_opts[@]}"
        if [ ! -f "${expdir}/folds.txt" ]; then  # ser.sh changed how it names exp dirs
            log "Error: ser.sh did not write ${expdir}/folds.txt; update the exp dir name in $0"
            exit 1
        fi
    fi
done

if [ ${stage} -le 5 ] && [ ${stop_stage} -ge 5 ]; then
    log "Stage 5: train x test matrices of every cell in exp/ -> ${matrix_out}"
    ${python} -m genser.bin.score_matrix --exp_root exp --out "${matrix_out}" \
        --commands exp/commands.log --genser_setting "nsteps${nsteps%% *}_eta0.0"
fi

log "Successfully finished. [elapsed=${SECONDS}s]"
