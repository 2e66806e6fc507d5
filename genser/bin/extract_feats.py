"""Stage 1: frontend features of a data dir into Kaldi ark/scp, one job of a split at a time.

    # job 3 of 4 (ser.sh runs JOB=1:nj through cmd.sh)
    python -m genser.bin.extract_feats --data_dir data/all/split4/3 --out_dir dump/fbank --job 3 \
        --frontend fbank --layers all --pooling none --dtype float32
    # then, once every job is done
    python -m genser.bin.extract_feats --merge --out_dir dump/fbank --nj 4 [--data_dir data/all]

A job writes ``feats.<job>.ark``/``.scp`` to temp names and renames them when complete, then
``feats.<job>.done`` (the job's settings and metadata). A job whose done marker and scp exist
and whose settings match is skipped, so re-running after a kill redoes only unfinished jobs.
``--merge`` checks every done marker, writes the sorted ``feats.scp`` and ``feats.yaml`` and logs
the on-disk size.
"""
import argparse
import logging


from genser.audio import speed_ratio
from genser.bin.common import load_config, setup_logging, str_or_none
from genser.features import (DTYPES, POOLINGS)
from genser.extraction import FrontendConfError, merge, run_job

log = logging.getLogger("genser.extract_feats")


def get_parser():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data_dir", type=str_or_none, default=None,
                        help="data dir to extract (wav.scp, optional segments); with --merge: check coverage")
    parser.add_argument("--out_dir", required=True, help="feature dump folder (dump/<feat_tag>)")
    parser.add_argument("--job", type=int, default=1, help="job number (names feats.<job>.ark/.scp/.done)")
    parser.add_argument("--nj", type=int, default=None, help="number of jobs (required with --merge)")
    parser.add_argument("--merge", action="store_true", help="merge the finished jobs into feats.scp + feats.yaml")
    parser.add_argument("--frontend", default="fbank", help="s3prl upstream name (fbank, mfcc, wavlm_local, ...)")
    parser.add_argument("--frontend_path", type=str_or_none, default=None,
                        help="checkpoint (s3prl *_local upstreams) or folder path overriding the spec's")
    parser.add_argument("--frontend_conf", type=str_or_none, default=None,
                        help="YAML frontend spec, e.g. {type: hf, path: /models/whisper-base}; overrides --frontend")
    parser.add_argument("--layers", default="all", help='layers to keep: all, or indices like "0 3 5"')
    parser.add_argument("--pooling", choices=POOLINGS, default="none",
                        help="none: frames [T, L*D]; mean: per-layer utterance mean [L, D]")
    parser.add_argument("--dtype", choices=DTYPES, default="float32", help="storage dtype")
    parser.add_argument("--batch_size", type=int, default=8, help="utterances per frontend forward pass")
    parser.add_argument("--device", default="cpu", help="torch device of the frontend (cpu, cuda, cuda:1)")
    parser.add_argument("--speed", type=float, default=1.0,
                        help="speed perturbation factor applied to every utterance (Kaldi/ESPnet sox speed; "
                             "ser.sh --speed_perturb_factors writes one dump per factor); 1: none")
    parser.add_argument("--min_duration", type=float, default=0.1,
                        help="warn (naming the utterance and file) about audio shorter than this many seconds")
    parser.add_argument("--num_threads", type=int, default=1,
                        help="torch CPU threads per job (jobs run in parallel; more threads contend)")
    return parser


# ---------------------------------------------------------------------------------------------
# ---------------------------------------------------------------------------------------------
def main(argv=None):
    parser = get_parser()
    args = load_config(parser, argv)
    setup_logging()
    if args.batch_size < 1:
        parser.error("--batch_size must be positive")
    if args.merge:
        merge(args)
        return
    if not args.data_dir:
        parser.error("--data_dir is required (except with --merge)")
    if args.nj is not None and not 1 <= args.job <= args.nj:
        parser.error(f"--job {args.job} is not in 1..{args.nj}")
    try:
        speed_ratio(args.speed)
    except ValueError as exc:
        parser.error(f"--speed: {exc}")
    import torch

    torch.set_num_threads(max(1, args.num_threads))
    try:
        run_job(args)
    except FrontendConfError as exc:
        raise SystemExit(f"error: {exc}") from None


if __name__ == "__main__":
    main()
