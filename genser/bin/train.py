"""Train a Gen-SER model or the classification baseline on one fold.

    python -m genser.bin.train --config conf/train.yaml --model genser \
        --feat_dir dump/fbank --data_dir data/all --task emotion --labels exp/x/labels.txt \
        --fold 1 --exp_dir exp/x/genser/seed0

Writes <exp_dir>/config.yaml (the resolved configuration) and <exp_dir>/fold_<f>/: train/dev/test
lists, checkpoint.pt (every epoch, for resuming), snapshots/ (the weights that may still be
averaged), model.pt (the averaged model), train.log and train.done (the run's identity). Runs
under torchrun (DDP, gloo on CPU, nccl on GPU) with rank and world size taken from the
environment. The training protocol is described in genser/trainer.py.
"""
import argparse
import gc
import logging
from pathlib import Path

import torch
import torch.distributed as dist
import yaml

from genser import trainer
from genser.bin.common import load_config, read_yaml, setup_logging
from genser.cmvn import FEAT_NORMS
from genser.config import merge
from genser.datadir import ATTR_OF_TASK
from genser.fileio import WRITE_ERRNOS
from genser.lock import LockError, dir_lock
from genser.experiment import train_fold
from genser.trainer import TRAIN_DEFAULTS, TrainingError

log = logging.getLogger("genser.train")


def get_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", help="YAML file with any option below; command-line flags override it")
    p.add_argument("--model", default="genser", choices=["genser", "classifier"], help="model kind")
    p.add_argument("--model_conf", default={}, type=_yaml_dict,
                   help="model configuration (YAML mapping), merged over the config file's model_conf")
    p.add_argument("--feat_dir", required=True, help="feature dump of stage 1 (feats.scp, feats.yaml)")
    p.add_argument("--data_dir", required=True, help="Kaldi data dir with utt2<attr> and utt2fold")
    p.add_argument("--speed_perturb_dirs", default="",
                   help="feature dumps (comma- or space-separated) of the same utterances, speed-perturbed (stage 1 "
                        "--speed_perturb_factors); each adds a copy of every training utterance, never of "
                        "dev or test ones")
    p.add_argument("--task", default="emotion", choices=sorted(ATTR_OF_TASK))
    p.add_argument("--labels", required=True, help="label list of stage 2 (one label per line)")
    p.add_argument("--fold", help="test fold id")
    p.add_argument("--fold_list", help="file of fold ids; with --fold_index picks one (run.pl JOB)")
    p.add_argument("--fold_index", type=int, help="1-based line of --fold_list")
    p.add_argument("--exp_dir", required=True, help="writes <exp_dir>/fold_<fold>/")
    d = TRAIN_DEFAULTS
    p.add_argument("--epochs", type=int, default=d["epochs"])
    p.add_argument("--batch_size", type=int, default=d["batch_size"], help="per process")
    p.add_argument("--lr", type=float, default=d["lr"])
    p.add_argument("--weight_decay", type=float, default=d["weight_decay"])
    p.add_argument("--warmup_epochs", type=float, default=d["warmup_epochs"], help="linear warm-up, then cosine decay")
    p.add_argument("--grad_clip", type=float, default=d["grad_clip"], help="0: off")
    p.add_argument("--dev_ratio", type=float, default=d["dev_ratio"],
                   help="share of training speakers held out as a dev set for model selection (0: none; a "
                        "corpus' own 'dev' fold is always used as the dev set)")
    p.add_argument("--average", type=int, default=d["average"],
                   help="model.pt averages the weights of this many epochs: the last ones without a dev set, "
                        "the best on dev UA with one (1: no averaging)")
    p.add_argument("--patience", type=int, default=d["patience"],
                   help="with a dev set, stop after this many epochs without dev gain (0: off)")
    p.add_argument("--eval_nsteps", type=int, default=d["eval_nsteps"], help="Gen-SER sampling steps on dev")
    p.add_argument("--max_frames", type=int, default=d["max_frames"],
                   help="random crop of longer training sequences, bounds memory (0: off)")
    p.add_argument("--class_balance", default=d["class_balance"], choices=trainer.CLASS_BALANCE,
                   help="sampler: draw training utterances with probability 1/count(class)")
    p.add_argument("--feat_norm", default=d["feat_norm"], choices=FEAT_NORMS,
                   help="per-speaker CMVN inside the model, from its training utterances' moments (genser/cmvn.py); "
                        "auto: only where speaker and label are independent in the training utterances")
    p.add_argument("--cmvn_relevance", type=float, default=d["cmvn_relevance"],
                   help="utterances' worth of the training moments in each speaker's")
    p.add_argument("--norm_k", default=d["norm_k"],
                   help="unit sizes for the training speakers' moments, drawn per example and epoch: e.g. "
                        "'all' (all the speaker's clips), '1 all' (also the clip alone, as a test clip is)")
    p.add_argument("--calibrate", default=d["calibrate"], choices=trainer.CALIBRATE,
                   help="crossfit: fit the posteriors' temperature on held-out training speakers after training, "
                        "every speaker group held out in turn (one extra training per group, on the others); "
                        "inner: one group only (one extra training); none: temperature 1")
    p.add_argument("--calibrate_groups", type=_at_least_two, default=d["calibrate_groups"],
                   help="speaker groups the training speakers are dealt into for calibration (at most one per "
                        "speaker); crossfit trains one calibration model per group, each on the other groups")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--num_threads", type=int, default=0, help="torch threads per process (0: torch default)")
    return p


def _at_least_two(text):
    value = int(text)
    if value < 2:
        raise argparse.ArgumentTypeError(f"need at least 2 groups (one held out, one to train on), got {value}")
    return value


def _yaml_dict(text):
    value = yaml.safe_load(text) if isinstance(text, str) else text
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a YAML mapping, got {text!r}")
    return value


def resolve_fold(params):
    if params.fold is not None:
        return str(params.fold)
    if params.fold_list is None or params.fold_index is None:
        raise SystemExit("error: give --fold, or --fold_list with --fold_index")
    folds = Path(params.fold_list).read_text().split()
    if not 1 <= params.fold_index <= len(folds):
        raise SystemExit(f"error: --fold_index {params.fold_index} outside 1..{len(folds)} of {params.fold_list}")
    return folds[params.fold_index - 1]


def main(argv=None):
    params = load_config(get_parser(), argv)
    if params.config:  # a --model_conf on the command line refines the config file's, key by key
        params.model_conf = merge(read_yaml(params.config).get("model_conf") or {}, params.model_conf)
    fold = resolve_fold(params)
    fold_dir = Path(params.exp_dir) / f"fold_{fold}"
    rank, world, device = trainer.setup_distributed(params.device)
    if params.num_threads > 0:
        torch.set_num_threads(params.num_threads)
    if rank == 0:
        fold_dir.mkdir(parents=True, exist_ok=True)
    setup_logging(fold_dir / "train.log" if rank == 0 else None)
    if world > 1:
        dist.barrier()
    log.info("world size %d, device %s; options: %s", world, device, vars(params))
    try:
        if rank == 0:
            with dir_lock(fold_dir):
                train_fold(params, fold, fold_dir, rank, world, device)
        else:
            train_fold(params, fold, fold_dir, rank, world, device)
    except (LockError, TrainingError) as exc:
        log.error("%s", exc)
        raise SystemExit(1) from None
    except OSError as exc:
        if exc.errno not in WRITE_ERRNOS:
            raise
        log.error("%s", exc)  # a full disk: one line naming the file, not a traceback
        raise SystemExit(1) from None
    if world > 1:
        # DDP's reducer sits in a reference cycle and outlives run(); if it is still alive when the
        # process group goes, gloo aborts the process at exit ("terminate called without an active
        # exception", about 1 run in 8 here). Collect it first, then leave together.
        gc.collect()
        dist.barrier()
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
