# Job runners, as in Kaldi and ESPnet: run.pl runs jobs on this machine, slurm.pl submits the same
# command lines to a Slurm cluster. Select with GENSER_BACKEND=local|slurm, or edit this file.
case "${GENSER_BACKEND:-local}" in
    local)
        export extract_cmd="utils/run.pl"
        export train_cmd="utils/run.pl"
        export decode_cmd="utils/run.pl"
        ;;
    slurm)
        export extract_cmd="utils/slurm.pl --mem 8G"
        export train_cmd="utils/slurm.pl --mem 16G --gpu 1"
        export decode_cmd="utils/slurm.pl --mem 8G"
        ;;
    *)
        echo "Error: unknown GENSER_BACKEND '${GENSER_BACKEND}' (use local or slurm)" >&2
        exit 1
        ;;
esac
