#!/usr/bin/env bash
# A short CUDA check of genser: the EmoDB recipe's stages 2-5 (training with cross-fitted
# calibration, decoding, scoring) with --device cuda on two folds and one seed, then one fold's
# training under torchrun (DDP; nccl where more than one process runs).
#
#   bash bench/gpu_check.sh [out_dir]     # from the repository root, after stage 1 of egs/emodb
#
# Needs egs/emodb/data/all and egs/emodb/dump/whisper_base_mean (./run.sh --stage 0 --stop_stage 1
# --frontend_conf conf/frontend/whisper_base.yaml). Logs go to out_dir (default exp/gpu_check).
set -u
out=$(readlink -f "${1:-exp/gpu_check}")
mkdir -p "${out}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
cd egs/emodb || exit 1
start=$(date +%s)
./run.sh --stage 2 --stop_stage 5 --frontend_conf conf/frontend/whisper_base.yaml --folds "03 08" --seeds 0 \
    --nj 2 --train_nj 2 --protocols clip --train_args "--device cuda" --decode_args "--device cuda" \
    > "${out}/recipe.log" 2>&1
echo "recipe rc=$? in $(( $(date +%s) - start )) s"
exp=exp/emotion_whisper_base_mean_cmvnauto_train_devicecuda
grep -h "calibration (" "${exp}/seed0/genser/fold_03/train.log"
sed -n '/Summary/,/^$/p' "${exp}/RESULTS.md"
ngpu=$(nvidia-smi --list-gpus | wc -l)
start=$(date +%s)
torchrun --standalone --nproc_per_node "${ngpu}" -m genser.bin.train --feat_dir dump/whisper_base_mean \
    --data_dir data/all --labels "${exp}/labels.txt" --fold 03 --exp_dir "${out}/ddp" --device cuda \
    --calibrate none > "${out}/ddp.log" 2>&1
echo "ddp (${ngpu} process(es)) rc=$? in $(( $(date +%s) - start )) s"
grep -h "world size" "${out}/ddp/fold_03/train.log" | cut -c1-80
