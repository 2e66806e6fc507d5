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
import hashlib
import logging
import os
from pathlib import Path

import torch
import torch.distributed as dist
import yaml
from torch.nn.parallel import DistributedDataParallel

from genser import trainer
from genser.bin.common import load_config, read_yaml, setup_logging
from genser.checkpoint import load_model, save_model
from genser.cmvn import FEAT_NORMS, choose_feat_norm
from genser.config import merge, resolve_config
from genser.datadir import ATTR_OF_TASK, load_data_dir
from genser.features import (FEATURE_KIND, FeatureReader, kind_differences,
                             model_layers, pad_collate, read_scp)
from genser.fileio import WRITE_ERRNOS, atomic_write, read_list, write_list
from genser.folds import fold_split
from genser.lock import LockError, dir_lock
from genser.models import build_model
from genser.taxonomy import format_cosine_matrix
from genser.trainer import TRAIN_DEFAULTS, TrainingError

log = logging.getLogger("genser.train")

# Options that decide where and how fast a run goes, not what it computes: left out of its identity.
NOT_IDENTITY = ("config", "exp_dir", "fold_list", "fold_index", "device", "num_threads", "feat_dir",
                "data_dir", "labels", "speed_perturb_dirs")


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
                   help="inner: fit the posteriors' temperature on held-out training speakers after training "
                        "(one extra training on the others); none: temperature 1")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--num_threads", type=int, default=0, help="torch threads per process (0: torch default)")
    return p


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


def setup_distributed(device):
    """(rank, world_size, device) from the torchrun environment; a single process otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1, torch.device(device)
    backend = "nccl" if device.startswith("cuda") else "gloo"
    dist.init_process_group(backend)
    if device.startswith("cuda"):
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
        torch.cuda.set_device(device)
    return dist.get_rank(), world, torch.device(device)


def file_digest(paths):
    """sha256 over the contents of existing files (missing ones count by name), 16 hex digits."""
    h = hashlib.sha256()
    for path in paths:
        path = Path(path)
        h.update(path.name.encode())
        if path.is_file():
            with open(path, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    h.update(block)
    return h.hexdigest()[:16]


def dump_digest(reader):
    """Digest of a feature dump: its feats.yaml and every ark that its feats.scp points into."""
    arks = sorted({Path(loc.rsplit(":", 1)[0]).name for loc in read_scp(reader.scp_path).values()})
    return file_digest([reader.feat_dir / "feats.yaml", *(reader.feat_dir / a for a in arks)])


def identity_parts(params, fold, labels, model_config, reader, perturbed=()):
    """What decides the result of training this fold: settings, labels, data and features."""
    attr = ATTR_OF_TASK[params.task]
    data = Path(params.data_dir)
    parts = {k: v for k, v in vars(params).items() if k not in NOT_IDENTITY and k != "model_conf"}
    parts.update(fold=fold, labels=list(labels), model_config=repr(model_config),
                 data=file_digest([data / f for f in ("utt2spk", f"utt2{attr}", "utt2fold")]),
                 features=dump_digest(reader))
    if perturbed:  # left out otherwise, so that runs without it keep their identity
        parts["speed_perturbed"] = [(r.meta.get("speed", 1.0), dump_digest(r)) for r in perturbed]
    return parts




def perturbed_readers(params, reader, train):
    """FeatureReaders of --speed_perturb_dirs, checked against the main dump and the training list."""
    readers = [FeatureReader(d) for d in params.speed_perturb_dirs.replace(",", " ").split()]
    for r in readers:
        # the same features of other audio, stored alike
        diff = kind_differences(r.meta, reader.meta, FEATURE_KIND + ("dtype",))
        if diff:
            raise ValueError(f"{r.feat_dir}: speed-perturbed features differ from {reader.feat_dir}: "
                             f"{'; '.join(diff)}; re-run stage 1")
        if r.meta.get("speed", 1.0) == 1.0:
            raise ValueError(f"{r.feat_dir}: not a speed-perturbed dump (feats.yaml has no speed other than 1)")
        missing = [u for u in train if u not in r]
        if missing:
            raise ValueError(f"{r.feat_dir}: {len(missing)} training utterances have no speed-perturbed "
                             f"features, e.g. {', '.join(missing[:3])}; re-run stage 1")
    return readers


def prepare_fold(params, fold):
    data = load_data_dir(params.data_dir)
    labels = read_list(params.labels)
    train, dev, test = fold_split(data, fold, dev_ratio=params.dev_ratio, seed=params.seed)
    if not train or not test:
        raise ValueError(f"fold {fold}: empty split (train {len(train)}, test {len(test)}) "
                         f"from {params.data_dir}/utt2fold")
    split = {"train": train, "dev": dev, "test": test}
    targets = {name: data.targets(params.task, utts, labels) for name, utts in split.items()}
    return labels, split, targets


def write_config(params, model_config):
    """<exp_dir>/config.yaml: the resolved options of this experiment (the same for every fold)."""
    conf = {k: v for k, v in vars(params).items() if k not in ("config", "fold", "fold_list", "fold_index",
                                                                "model_conf")}
    conf["model_conf"] = model_config
    atomic_write(Path(params.exp_dir) / "config.yaml", yaml.safe_dump(conf, sort_keys=False))


def fold_norm(params, split, reader):
    """The fold's normalisation kind ('speaker' or 'none') and the speaker-label dependence of
    its training and dev utterances (never the test fold's), logged."""
    data = load_data_dir(params.data_dir)
    attr = getattr(data, ATTR_OF_TASK[params.task])
    seen = split["train"] + split["dev"]
    kind, dep = choose_feat_norm(params.feat_norm, data.spk, {u: attr[u] for u in seen})
    if kind == "speaker" and reader.meta.get("cmvn"):
        raise ValueError(f"{reader.feat_dir} is already normalised ({reader.meta['cmvn'].get('group')}); "
                         f"train with --feat_norm none, or on the raw dump")
    log.info("feature normalisation: %s (--feat_norm %s; speaker-label dependence %.3f over %d training "
             "utterances)", kind, params.feat_norm, dep, len(seen))
    return kind, dep


def run(params, fold, fold_dir, rank, world, device):
    labels, split, targets = prepare_fold(params, fold)
    reader = FeatureReader(params.feat_dir)
    meta = reader.meta
    norm_kind, dependence = fold_norm(params, split, reader)
    perturbed = perturbed_readers(params, reader, split["train"])
    model_conf = resolve_config(merge(params.model_conf, {"model": params.model}))
    identity = trainer.run_identity(identity_parts(params, fold, labels, model_conf, reader, perturbed))
    if (fold_dir / "train.done").exists():
        differs = trainer.done_difference(fold_dir / "train.done", identity)
        if differs is None:
            log.info("%s: fold %s is trained (identity %s), nothing to do", fold_dir / "train.done", fold,
                     identity["hash"])
            return
        raise TrainingError(f"{fold_dir} holds a model of another experiment ({differs}); remove {fold_dir} or "
                            f"train into a new exp dir")
    if rank == 0:
        write_config(params, model_conf)
        for name, utts in split.items():
            write_list(fold_dir / f"{name}.list", utts)
    torch.manual_seed(params.seed)  # identical initialisation on every rank
    model = build_model(model_conf, labels=labels, input_dim=meta["dim"], num_layers=model_layers(meta)).to(device)
    log.info("fold %s: train %d, dev %d, test %d utterances; %s with %.2fM parameters; identity %s",
             fold, len(split["train"]), len(split["dev"]), len(split["test"]), params.model,
             sum(p.numel() for p in model.parameters()) / 1e6, identity["hash"])
    log.info("model config: %s", model.config)
    if model.kind == "genser":  # the margin between codes bounds what the sampler can separate
        log.info("taxonomy codes, pairwise cosine:\n%s", format_cosine_matrix(model.taxonomy.codes, labels))
    hp = {k: getattr(params, k) for k in (*TRAIN_DEFAULTS, "seed")}
    sources = [reader, *perturbed]
    if perturbed:
        log.info("speed perturbation: %d training items (%d utterances x %d: factors 1 %s)",
                 len(split["train"]) * len(sources), len(split["train"]), len(sources),
                 " ".join(str(r.meta["speed"]) for r in perturbed))
    spk = load_data_dir(params.data_dir).spk
    # extra["norm"] is the normalisation a model applies (absent: none; genser-infer reads it),
    # extra["feat_norm"] how the fold came to it.
    train_set, dev_set, norm = trainer.fold_datasets(
        sources=sources, train_utts=split["train"], train_targets=targets["train"], dev_utts=split["dev"],
        dev_targets=targets["dev"], spk=spk, norm_kind=norm_kind, params=hp)
    loaders = trainer.build_loaders(dataset=train_set, dev_dataset=dev_set, params=hp, world=world, rank=rank,
                                    collate=pad_collate)
    optimizer = trainer.make_optimizer(model, hp)
    state = trainer.new_state(hp, len(loaders["train"]), identity)
    ckpt_path = fold_dir / "checkpoint.pt"
    if ckpt_path.exists():
        state = trainer.load_checkpoint(ckpt_path, model, optimizer, identity)
        log.info("resuming from %s at epoch %d", ckpt_path, state["epoch"])
    step_model = DistributedDataParallel(trainer.LossModule(model)) if world > 1 else trainer.LossModule(model)

    def save(path, model, extra):
        extra = {**extra, "feats": meta, "task": params.task, "fold": fold, "identity": identity["hash"],
                 "feat_norm": {"requested": params.feat_norm, "kind": norm_kind, "dependence": dependence}}
        save_model(path, model, extra={**extra, "norm": norm} if norm else extra)

    keep = trainer.fit(model=model, step_model=step_model, optimizer=optimizer, loaders=loaders, params=hp,
                       state=state, device=device, rank=rank, fold_dir=fold_dir, where=f"fold {fold}",
                       save_model_fn=save)
    if rank == 0 and params.calibrate == "inner":
        model.temperature, report = trainer.calibrate_inner(
            build=lambda: build_model(model_conf, labels=labels, input_dim=meta["dim"], num_layers=model_layers(meta)),
            sources=sources, train_utts=split["train"] + split["dev"],
            targets=dict(zip(split["train"] + split["dev"], targets["train"] + targets["dev"])), spk=spk,
            norm_kind=norm_kind, params=hp, device=device, where=f"fold {fold}")
        log.info("calibration: %s", report)
        # read by the calibration study of stage 5 (genser.calibration_study.stored_temperature)
        atomic_write(fold_dir / "calibration", f"temperature {model.temperature:.6f}\n{report}\n")
        save(fold_dir / "model.pt", model, load_model(fold_dir / "model.pt")[1])
    if rank == 0:
        # read by scoring (genser.report.fold_norms): which normalisation each fold's model holds
        atomic_write(fold_dir / "feat_norm", f"{norm_kind} {dependence:.4f}\n")
        atomic_write(fold_dir / "train.done", trainer.done_text(identity, keep))


def main(argv=None):
    params = load_config(get_parser(), argv)
    if params.config:  # a --model_conf on the command line refines the config file's, key by key
        params.model_conf = merge(read_yaml(params.config).get("model_conf") or {}, params.model_conf)
    fold = resolve_fold(params)
    fold_dir = Path(params.exp_dir) / f"fold_{fold}"
    rank, world, device = setup_distributed(params.device)
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
                run(params, fold, fold_dir, rank, world, device)
        else:
            run(params, fold, fold_dir, rank, world, device)
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
