#!/usr/bin/env bash
# Gen-SER recipe: the stages shared by every corpus (ESPnet egs2/TEMPLATE idiom).
# A corpus recipe is a thin run.sh that names its corpus (--corpus) and calls this script; only
# stage 0 (local/data.sh, shared too) reads the corpus.
#
#   stage 0: data prep      local/data.sh               -> data/all (validated Kaldi data dir)
#   stage 1: features       genser.bin.extract_feats    -> dump/<feat_tag>/feats.scp + feats.yaml
#   stage 2: labels, folds  genser.bin.make_labels      -> <expdir>/labels.txt, folds.txt
#   stage 3: training       genser.bin.train            -> <expdir>/seed<S>/<model>/fold_<f>/model.pt
#   stage 4: decoding       genser.bin.decode           -> .../fold_<f>/decode_<setting>/hyp.tsv
#   stage 5: scoring        genser.bin.score(_seeds)    -> <expdir>/seed<S>/RESULTS.md, <expdir>/RESULTS.md
#
# <expdir> is exp/<task>_<feat_tag>_<config name>[_<train_args tag>][_<exp_tag>], as ESPnet names
# its exp dirs, so another config or other training arguments never reuse a model; each seed has
# its own seed<S>/ below it. Training records the identity (hash) of its data, features and
# settings and refuses to resume or reuse a fold whose inputs changed.
set -e
set -u
set -o pipefail

log() {
    local fname=${BASH_SOURCE[1]##*/}
    echo -e "$(date '+%Y-%m-%dT%H:%M:%S') (${fname}:${BASH_LINENO[0]}:${FUNCNAME[1]}) $*" >&2
}
SECONDS=0

# General options
stage=0               # First stage to run.
stop_stage=100        # Last stage to run.
nj=4                  # Number of parallel feature-extraction jobs.
train_nj=1            # Number of folds trained at the same time.
python=python3        # Python interpreter (path.sh puts the genser venv first on PATH).

# Data options
task=emotion          # Classification task: emotion | gender.
corpus=               # The recipe's corpus, for local/data.sh (synth or a genser.bin.prepare_corpus corpus).
corpus_dir=           # Corpus root, passed to local/data.sh as --corpus_dir when set.
local_data_opts=      # Extra options for local/data.sh.
data_dir=data/all     # Data directory written by stage 0.
min_fold_utts=5       # Stage 2: a test fold with fewer utterances is degenerate.
allow_degenerate_folds=false  # Stage 2: run degenerate folds (too small, or a class without training example) anyway; RESULTS.md marks them.

# Feature options
frontend=fbank_no_cmvn  # s3prl upstream name (fbank_no_cmvn, fbank, mfcc, wavlm_large, wavlm_local, ...).
frontend_path=        # Checkpoint for s3prl *_local upstreams.
frontend_conf=        # YAML frontend spec (e.g. a transformers folder); overrides --frontend.
feat_layers=all       # Layers to keep: all, or a list such as "0 3 5".
feat_pooling=auto     # none (frames), mean (per-layer means), meanstd (mean and std); auto: meanstd for fbank_no_cmvn/mfcc/..., frames for fbank, mean otherwise.
feat_dtype=float32    # Storage dtype: float32 | float16.
feat_tag=             # Name of the feature dump; derived from the frontend when empty.
extract_batch_size=8  # Utterances per frontend forward pass.
speed_perturb_factors=  # Speed perturbation of the training utterances, ESPnet style, e.g. "0.9 1.0 1.1":
                      # stage 1 also extracts dump/<feat_tag>_sp<f> per factor f != 1, and training adds
                      # a copy of every training utterance per factor (never of dev or test ones).
feat_norm=auto        # none | speaker | auto: per-speaker CMVN inside the model (genser/cmvn.py), from its training
                      # utterances' moments; auto: per fold, only where speaker and label are independent in the
                      # training utterances. Test clips are normalised as --protocols say.
cmvn_relevance=       # Utterances' worth of the training moments in each speaker's (genser/cmvn.py; empty:
                      # genser-train's default, 2).
device=cpu            # Device for extraction, training and decoding (cpu, cuda).

# Training options
train_config=conf/train.yaml  # Training/model configuration (YAML).
models="genser classifier"    # Models to train side by side: genser and/or classifier.
folds=all             # Test folds to run: all, or a list such as "1 2".
seeds=0               # Random seeds: one value or a list, e.g. "0 1 2" (RESULTS.md aggregates them).
train_nproc=1         # Processes per fold for torchrun DDP training (>1 enables DDP).
train_args=           # Extra arguments for genser.bin.train (e.g. "--epochs 5").
exp_tag=              # Suffix for the experiment directory.

# Decoding options
nsteps="1"            # Gen-SER sampling steps: one value or a list for the ablation, e.g. "1 3 10".
eta=0.0               # Stochasticity of the sampler: one value or a list, e.g. "0.0 0.5".
protocols="clip speaker-3 speaker-10 speaker-all"  # Evaluation protocols: which statistics of the test speaker a
                      # decision uses (clip: none, the headline; speaker-K: K unlabelled clips; speaker-all: all).
decode_args=          # Extra arguments for genser.bin.decode.
probe=true            # Stage 5 also scores the logistic-regression probe on the same features, folds,
                      # normalisation and protocols (utterance dumps only), beside the models.

help_message=$(cat <<HELP
Usage: $0 [options]
  Runs the Gen-SER stages 0-5 for the corpus of the calling recipe directory.
HELP
)

# The command line without --stage/--stop_stage, for the resume script of stage 3.
resume_args=()
skip_next=false
for arg in "$@"; do
    if ${skip_next}; then skip_next=false; continue; fi
    case "${arg}" in
        --stage|--stop_stage|--stop-stage) skip_next=true ;;
        --stage=*|--stop_stage=*|--stop-stage=*) ;;
        *) resume_args+=("${arg}") ;;
    esac
done
. utils/parse_options.sh
# The options in effect, each once with its final value: a recipe default that the user's option
# overrides does not show (run.sh passes its defaults first).
log "$0 ${options_given}${frontend_conf:+ (--frontend_conf replaces --frontend)}"
if [ $# -gt 0 ]; then
    log "Error: unexpected argument(s): $* (options take the form --name value; see --help)"
    exit 2
fi
. ./path.sh
. ./db.sh
. ./cmd.sh

# An empty list would make stages 3 and 4 do nothing and stage 5 fail far from the cause.
[[ -n "${seeds//[[:space:]]/}" ]] || { log "Error: --seeds is empty; give at least one seed (e.g. --seeds 0)"; exit 2; }
[[ -n "${models//[[:space:]]/}" ]] || { log "Error: --models is empty; give genser and/or classifier"; exit 2; }

case "${task}" in
    emotion) attr=emo ;;
    gender) attr=gender ;;
    *) log "Error: --task must be emotion or gender, got '${task}'"; exit 2 ;;
esac

# shellcheck source=names.sh
. "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/names.sh"
[ "${feat_pooling}" = auto ] && feat_pooling=$(auto_feat_pooling "${frontend_conf}" "${frontend}")
[ -z "${feat_tag}" ] && feat_tag=$(default_feat_tag "${frontend_conf}" "${frontend}" "${feat_layers}" \
    "${feat_pooling}" "${feat_dtype}")
norm_tag=$(feat_norm_tag "${feat_norm}" "${cmvn_relevance}") || exit 2
raw_dir=dump/${feat_tag}
# ESPnet's tag: the config name, then the overridden training arguments ("--epochs 80" -> epochs80).
config_tag=$(basename "${train_config}" .yaml)
args_tag=$(train_args_tag "${train_args}")
sp_factors=$(speed_perturb_factors_of "${speed_perturb_factors}") || exit 2
sp_tag=$(speed_perturb_tag "${speed_perturb_factors}")
sp_dirs=$(for f in ${sp_factors}; do echo "${raw_dir}_sp${f}"; done | paste -sd,)
expdir=exp/${task}_${feat_tag}${norm_tag}_${config_tag}${args_tag}${sp_tag}${exp_tag:+_${exp_tag}}

# One run at a time per directory (a dead run's lock is taken over): lock_dir DIR HINT.
lock_owner="$0 ${resume_args[*]+${resume_args[*]}}"
# shellcheck source=../../utils/lib/lock.sh
. utils/lib/lock.sh

# Fails with a message naming the missing file and the stage that makes it.
require() {
    local file=$1 maker=$2
    if [ ! -e "${file}" ]; then
        log "Error: ${file} is missing; it is made by stage ${maker} (run with --stage ${maker})."
        exit 1
    fi
}

# Prints the error logs of a failed parallel step, as ESPnet does.
show_failed_logs() {
    local pattern=$1 f
    for f in ${pattern}; do
        if [ -f "${f}" ] && grep -q "^# Ended (code [1-9]" "${f}"; then
            log "---- ${f} (last 20 lines) ----"
            tail -n 20 "${f}" >&2
        fi
    done
}

if [ ${stage} -le 0 ] && [ ${stop_stage} -ge 0 ]; then
    log "Stage 0: data preparation (local/data.sh) -> ${data_dir}"
    # shellcheck disable=SC2086
    local/data.sh --corpus "${corpus}" --data_dir "${data_dir}" ${corpus_dir:+--corpus_dir "${corpus_dir}"} \
        ${local_data_opts}
    utils/validate_data_dir.sh "${data_dir}"
fi

# extract_dump OUT_DIR SPEED: stage 1 into one dump (SPEED 1: the audio as it is).
extract_dump() {
    local out=$1 speed=$2 frontend_opts
    log "Stage 1: feature extraction (${out##*/}, nj=${nj}${speed:+, speed ${speed}}) ${data_dir} -> ${out}"
    lock_dir "${out}" "give it another name (--feat_tag)"
    mkdir -p "${out}/log"
    if [ -n "${frontend_conf}" ]; then
        frontend_opts="--frontend_conf ${frontend_conf}"
    else
        frontend_opts="--frontend ${frontend}${frontend_path:+ --frontend_path ${frontend_path}}"
    fi
    # Each job skips itself when its .done marker exists, so a re-run redoes only unfinished jobs.
    # shellcheck disable=SC2086
    ${extract_cmd} JOB=1:"${nj}" "${out}/log/extract.JOB.log" \
        ${python} -m genser.bin.extract_feats \
            --data_dir "${data_dir}/split${nj}/JOB" --out_dir "${out}" --job JOB --nj "${nj}" \
            ${frontend_opts} --layers "${feat_layers}" --pooling "${feat_pooling}" \
            --dtype "${feat_dtype}" --batch_size "${extract_batch_size}" --device "${device}" \
            ${speed:+--speed "${speed}"} \
        || { show_failed_logs "${out}/log/extract.*.log"; exit 1; }
    ${python} -m genser.bin.extract_feats --merge --out_dir "${out}" --nj "${nj}" \
        --data_dir "${data_dir}" 2>&1 | tee "${out}/log/merge.log"
}

if [ ${stage} -le 1 ] && [ ${stop_stage} -ge 1 ]; then
    require "${data_dir}/wav.scp" 0
    utils/split_data.sh "${data_dir}" "${nj}"
    extract_dump "${raw_dir}" ""
    for f in ${sp_factors}; do
        extract_dump "${raw_dir}_sp${f}" "${f}"
    done
fi

if [ ${stage} -le 5 ] && [ ${stop_stage} -ge 2 ]; then
    lock_dir "${expdir}" "use another --exp_tag"
fi

if [ ${stage} -le 2 ] && [ ${stop_stage} -ge 2 ]; then
    require "${data_dir}/utt2${attr}" 0
    log "Stage 2: label list and test folds -> ${expdir}"
    mkdir -p "${expdir}"
    ${python} -m genser.bin.make_labels --data_dir "${data_dir}" --task "${task}" \
        --folds "${folds}" --out_dir "${expdir}" --min_fold_utts "${min_fold_utts}" \
        --allow_degenerate_folds "${allow_degenerate_folds}" 2>&1 \
        | tee "${expdir}/make_labels.log"
fi

if [ ${stage} -le 3 ] && [ ${stop_stage} -ge 3 ]; then
    require "${raw_dir}/feats.scp" 1
    for d in ${sp_dirs//,/ }; do require "${d}/feats.scp" 1; done
    require "${expdir}/labels.txt" 2
    # Training runs the folds of folds.txt, which stage 2 made from --folds: another list is refused.
    # shellcheck disable=SC2086
    if [ "${folds}" != all ] && [ "$(printf '%s\n' ${folds} | sort)" != "$(sort "${expdir}/folds.txt")" ]; then
        log "Error: --folds '${folds}' is not what stage 2 chose ($(paste -sd' ' "${expdir}/folds.txt")); run with --stage 2"
        exit 2
    fi
    log "Stage 3: training (${models}) on folds $(tr '\n' ' ' < "${expdir}/folds.txt")-> ${expdir}"
    # Resume script, as ESPnet writes one: re-running it continues from the last checkpoint.
    {
        echo "#!/usr/bin/env bash"
        printf 'cd %q && ' "$(pwd)"
        printf '%q ' "$0" ${resume_args[@]+"${resume_args[@]}"} --stage 3
        echo
    } > "${expdir}/run.sh"
    chmod +x "${expdir}/run.sh"
    nfolds=$(wc -l < "${expdir}/folds.txt")
    if [ "${train_nproc}" -gt 1 ]; then
        launcher="torchrun --standalone --nnodes 1 --nproc_per_node ${train_nproc} -m genser.bin.train"
    else
        launcher="${python} -m genser.bin.train"
    fi
    for seed in ${seeds}; do
        for model in ${models}; do
            mdir=${expdir}/seed${seed}/${model}
            mkdir -p "${mdir}/log"
            # One job per fold; JOB indexes folds.txt. Finished folds return at once (train.done).
            # shellcheck disable=SC2086
            ${train_cmd} --max-jobs-run "${train_nj}" JOB=1:"${nfolds}" "${mdir}/log/train.JOB.log" \
                ${launcher} --config "${train_config}" --model "${model}" \
                    --feat_dir "${raw_dir}" --data_dir "${data_dir}" --task "${task}" \
                    --feat_norm "${feat_norm}" ${cmvn_relevance:+--cmvn_relevance "${cmvn_relevance}"} \
                    --labels "${expdir}/labels.txt" --fold_list "${expdir}/folds.txt" --fold_index JOB \
                    --exp_dir "${mdir}" --seed "${seed}" --device "${device}" \
                    ${sp_dirs:+--speed_perturb_dirs "${sp_dirs}"} ${train_args} \
                || { show_failed_logs "${mdir}/log/train.*.log"; exit 1; }
        done
    done
fi

if [ ${stage} -le 4 ] && [ ${stop_stage} -ge 4 ]; then
    require "${expdir}/folds.txt" 2
    log "Stage 4: decoding (seeds: ${seeds}; nsteps: ${nsteps}; eta: ${eta}; protocols: ${protocols})"
    ndecode=$(( $(wc -w <<< "${seeds}") * $(wc -w <<< "${models}") * $(wc -l < "${expdir}/folds.txt") ))
    idecode=0
    for seed in ${seeds}; do
        for model in ${models}; do
            while read -r fold; do
                fdir=${expdir}/seed${seed}/${model}/fold_${fold}
                require "${fdir}/model.pt" 3
                # shellcheck disable=SC2086
                ${decode_cmd} "${fdir}/decode.log" \
                    ${python} -m genser.bin.decode --model_dir "${fdir}" \
                        --feat_dir "${raw_dir}" --data_dir "${data_dir}" --task "${task}" \
                        --nsteps "${nsteps}" --eta "${eta}" --protocols "${protocols}" --seed "${seed}" \
                        --device "${device}" \
                        ${decode_args} \
                    || { show_failed_logs "${fdir}/decode.log"; exit 1; }
                idecode=$((idecode + 1))
            done < "${expdir}/folds.txt"
            log "Stage 4: ${idecode}/${ndecode} folds decoded (seed ${seed}, ${model}), ${SECONDS}s since the start"
        done
    done
fi

if [ ${stage} -le 5 ] && [ ${stop_stage} -ge 5 ]; then
    require "${expdir}/folds.txt" 2
    log "Stage 5: scoring (seeds: ${seeds}) -> ${expdir}/RESULTS.md"
    for seed in ${seeds}; do
        ${python} -m genser.bin.score --exp_dir "${expdir}/seed${seed}" --out "${expdir}/seed${seed}/RESULTS.md" \
            --protocols "${protocols}"
    done
    probe_opts=()
    pooling=$(sed -n 's/^pooling: *//p' "${raw_dir}/feats.yaml" 2>/dev/null || true)
    if ${probe} && [ -n "${pooling}" ] && [ "${pooling}" != none ]; then
        first_seed=${seeds%% *}
        first_model=${models%% *}
        log "Stage 5: LR probe (${raw_dir}, normalised as ${expdir}/seed${first_seed}/${first_model}) -> ${expdir}/probe.yaml"
        ${python} -m genser.bin.probe --feat_dir "${raw_dir}" --data_dir "${data_dir}" --task "${task}" \
            --fold_list "${expdir}/folds.txt" --like "${expdir}/seed${first_seed}/${first_model}/config.yaml" \
            --protocols "${protocols}" --out "${expdir}/probe.yaml" 2>&1 | tee "${expdir}/probe.log"
        probe_opts=(--probe "${expdir}/probe.yaml")
    fi
    ${python} -m genser.bin.score_seeds --exp_dir "${expdir}" --seeds "${seeds}" --protocols "${protocols}" \
        ${probe_opts[@]+"${probe_opts[@]}"}
fi

log "Successfully finished. [elapsed=${SECONDS}s]"
