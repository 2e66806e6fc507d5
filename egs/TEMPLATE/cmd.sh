# Job runners, as in Kaldi and ESPnet: run.pl runs jobs on this machine, slurm.pl submits the same
# command lines to a Slurm cluster. Select with GENSER_BACKEND=local|slurm.
#
# ser.sh sources this file after parsing its options, so the Slurm requests follow them: a stage
# that runs on a GPU (--device cuda) asks for one (training for --train_nproc of them), and a
# stage on the CPU never does; DDP training on the CPU asks for --train_nproc CPUs.
#
# Per-site settings come from the environment (e.g. your ~/.bashrc), so this file, shared by
# every recipe, stays as it is:
#   GENSER_SLURM_ARGS       slurm.pl options for every job, e.g.
#                           "--partition cpu --account ser --time 12:00:00 --controller-timeout 1800"
#   GENSER_SLURM_GPU_ARGS   added to the jobs that use a GPU, e.g. "--partition gpu"
#   GENSER_SLURM_EXTRACT_MEM, GENSER_SLURM_TRAIN_MEM, GENSER_SLURM_DECODE_MEM
#                           memory per job; "" leaves it to the site's default. Defaults 4G,
#                           4G, 2G: training on EmoDB peaks at 0.6 GB (bench/results/cost.md),
#                           the synth recipe's largest job at 0.4 GB (bench/results/slurm.md),
#                           and --train_nj 2 plus an extraction job fit a 16 GB node
# The options of utils/slurm.pl (--mem, --gpu, --time, --partition, --sbatch-args ...) are listed
# at its top.
case "${GENSER_BACKEND:-local}" in
    local)
        export extract_cmd="utils/run.pl"
        export train_cmd="utils/run.pl"
        export decode_cmd="utils/run.pl"
        ;;
    slurm)
        _slurm_job() {  # <memory> <GPUs> <CPUs>: the slurm.pl command line of one kind of job
            local cmd="utils/slurm.pl${GENSER_SLURM_ARGS:+ ${GENSER_SLURM_ARGS}}"
            [ -n "$1" ] && cmd+=" --mem $1"
            [ "$2" -gt 0 ] && cmd+=" --gpu $2${GENSER_SLURM_GPU_ARGS:+ ${GENSER_SLURM_GPU_ARGS}}"
            [ "$3" -gt 1 ] && cmd+=" --num-threads $3"
            echo "${cmd}"
        }
        case "${device:-cpu}" in
            cuda*) _gpus=1; _train_gpus=${train_nproc:-1}; _train_cpus=1 ;;
            *) _gpus=0; _train_gpus=0; _train_cpus=${train_nproc:-1} ;;
        esac
        extract_cmd=$(_slurm_job "${GENSER_SLURM_EXTRACT_MEM-4G}" "${_gpus}" 1)
        train_cmd=$(_slurm_job "${GENSER_SLURM_TRAIN_MEM-4G}" "${_train_gpus}" "${_train_cpus}")
        decode_cmd=$(_slurm_job "${GENSER_SLURM_DECODE_MEM-2G}" "${_gpus}" 1)
        export extract_cmd train_cmd decode_cmd
        unset -f _slurm_job
        unset _gpus _train_gpus _train_cpus
        ;;
    *)
        echo "Error: unknown GENSER_BACKEND '${GENSER_BACKEND}' (use local or slurm)" >&2
        exit 1
        ;;
esac
