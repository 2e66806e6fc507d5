"""Train a Gen-SER model or the classification baseline on one fold.

    python -m genser.bin.train --config conf/train.yaml --model genser \
        --feat_dir dump/fbank --data_dir data/all --task emotion --labels exp/x/labels.txt \
        --fold 1 --exp_dir exp/x/genser

Writes <exp_dir>/fold_<f>/: train/dev/test.list, checkpoint.pt (every epoch, for resuming),
model.pt (best on dev), train.log and train.done. Runs under torchrun (DDP, gloo on CPU, nccl on
GPU) with rank and world size taken from the environment.
"""
import argparse
import gc
import logging
import math
import os
import random
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler
from tqdm import tqdm

from genser.bin.common import load_config, read_yaml, setup_logging
from genser.datadir import ATTR_OF_TASK, fold_split, load_data_dir
from genser.features import FeatureDataset, FeatureReader, pad_collate
from genser.fileio import atomic_open, read_list, write_list
from genser.metrics import summarize
from genser.models import build_model, save_model

log = logging.getLogger("genser.train")


def get_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", help="YAML file with any option below; command-line flags override it")
    p.add_argument("--model", default="genser", choices=["genser", "classifier"], help="model kind")
    p.add_argument("--model_conf", default={}, type=_yaml_dict,
                   help="model configuration (YAML mapping), merged over the config file's model_conf")
    p.add_argument("--feat_dir", required=True, help="feature dump of stage 1 (feats.scp, feats.yaml)")
    p.add_argument("--data_dir", required=True, help="Kaldi data dir with utt2<attr> and utt2fold")
    p.add_argument("--task", default="emotion", choices=sorted(ATTR_OF_TASK))
    p.add_argument("--labels", required=True, help="label list of stage 2 (one label per line)")
    p.add_argument("--fold", help="test fold id")
    p.add_argument("--fold_list", help="file of fold ids; with --fold_index picks one (run.pl JOB)")
    p.add_argument("--fold_index", type=int, help="1-based line of --fold_list")
    p.add_argument("--exp_dir", required=True, help="writes <exp_dir>/fold_<fold>/")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--batch_size", type=int, default=32, help="per process")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--weight_decay", type=float, default=1e-2)
    p.add_argument("--warmup_epochs", type=float, default=1.0, help="linear warm-up, then cosine decay")
    p.add_argument("--grad_clip", type=float, default=5.0)
    p.add_argument("--dev_ratio", type=float, default=0.15,
                   help="share of training speakers held out for model selection")
    p.add_argument("--patience", type=int, default=0, help="stop after this many epochs without dev gain (0: off)")
    p.add_argument("--eval_nsteps", type=int, default=1, help="Gen-SER sampling steps for dev selection")
    p.add_argument("--max_frames", type=int, default=0,
                   help="random crop of longer training sequences, bounds memory (0: off)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--num_threads", type=int, default=0, help="torch threads per process (0: torch default)")
    return p


def _yaml_dict(text):
    import yaml

    value = yaml.safe_load(text) if isinstance(text, str) else text
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a YAML mapping, got {text!r}")
    return value


def merge_conf(base, override):
    """Deep merge of nested dicts; override wins."""
    out = dict(base)
    for key, value in override.items():
        out[key] = merge_conf(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def resolve_fold(params):
    if params.fold is not None:
        return str(params.fold)
    if params.fold_list is None or params.fold_index is None:
        raise SystemExit("error: give --fold, or --fold_list with --fold_index")
    folds = Path(params.fold_list).read_text().split()
    if not 1 <= params.fold_index <= len(folds):
        raise SystemExit(f"error: --fold_index {params.fold_index} outside 1..{len(folds)} of {params.fold_list}")
    return folds[params.fold_index - 1]


def targets_of(data, task, labels, utts, data_dir):
    """Label index per utterance; an unknown label is an error naming the utterance and file."""
    attr = ATTR_OF_TASK[task]
    utt2label = getattr(data, attr)
    index = {label: i for i, label in enumerate(labels)}
    targets = []
    for utt in utts:
        if utt not in utt2label:
            raise ValueError(f"utterance {utt} has no label in {Path(data_dir) / ('utt2' + attr)}")
        label = utt2label[utt]
        if label not in index:
            raise ValueError(f"utterance {utt}: label '{label}' in {Path(data_dir) / ('utt2' + attr)} "
                             f"is not in the label list {labels}")
        targets.append(index[label])
    return targets


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


class LossModule(torch.nn.Module):
    """DDP synchronises gradients through forward(); the models expose loss() instead."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, feats, lengths, targets):
        return self.model.loss(feats, lengths, targets)


def lr_factor(step, warmup_steps, total_steps):
    """Linear warm-up then cosine decay to zero."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def crop_batch(batch, max_frames, rng):
    """Random crop of each sequence longer than max_frames (training only)."""
    if max_frames <= 0:
        return batch
    out = []
    for feats, target in batch:
        if feats.shape[0] > max_frames:
            start = rng.randint(0, feats.shape[0] - max_frames)
            feats = feats[start:start + max_frames]
        out.append((feats, target))
    return out


@torch.no_grad()
def evaluate(model, loader, device, nsteps, seed):
    """Dev UA/WA and loss; sampling is seeded so that model selection is reproducible."""
    model.eval()
    generator = torch.Generator(device=device).manual_seed(seed)
    refs, hyps, losses = [], [], []
    for feats, lengths, targets in loader:
        feats, lengths, targets = feats.to(device), lengths.to(device), targets.to(device)
        loss, _ = model.loss(feats, lengths, targets)
        out = model.predict(feats, lengths, nsteps=nsteps, eta=0.0, generator=generator)
        losses.append(loss.item() * len(targets))
        refs.append(targets.cpu())
        hyps.append(out["pred"].cpu())
    refs, hyps = torch.cat(refs).numpy(), torch.cat(hyps).numpy()
    stats = summarize(refs, hyps, len(model.labels))
    stats["loss"] = float(sum(losses) / len(refs))
    return stats


def train_one_epoch(*, ddp_model, loader, optimizer, params, state, device, rank):
    ddp_model.train()
    total, count = 0.0, 0
    for batch in tqdm(loader, desc=f"epoch {state['epoch']}", disable=rank != 0, mininterval=5, leave=False):
        feats, lengths, targets = (x.to(device) for x in batch)
        for group in optimizer.param_groups:
            group["lr"] = params.lr * lr_factor(state["step"], state["warmup_steps"], state["total_steps"])
        loss, _ = ddp_model(feats, lengths, targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if params.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(ddp_model.parameters(), params.grad_clip)
        optimizer.step()
        state["step"] += 1
        total += loss.item() * len(targets)
        count += len(targets)
    return total / max(count, 1)


def make_loaders(*, params, reader, split, targets, world, rank, crop_rng):
    train_set = FeatureDataset(reader, split["train"], targets["train"])
    sampler = DistributedSampler(train_set, num_replicas=world, rank=rank, shuffle=True, seed=params.seed) \
        if world > 1 else None
    train_loader = DataLoader(
        train_set, batch_size=params.batch_size, shuffle=sampler is None, sampler=sampler, drop_last=False,
        collate_fn=lambda b: pad_collate(crop_batch(b, params.max_frames, crop_rng)),
        generator=torch.Generator().manual_seed(params.seed))
    dev_loader = DataLoader(FeatureDataset(reader, split["dev"], targets["dev"]),
                            batch_size=max(64, params.batch_size), collate_fn=pad_collate)
    return train_loader, sampler, dev_loader


def load_checkpoint(path, model, optimizer):
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    return ckpt["state"]


def save_checkpoint(path, model, optimizer, state):
    with atomic_open(path, "wb") as f:
        torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "state": state}, f)


def is_better(stats, best):
    """Dev UA first; dev loss breaks ties so that a flat UA still selects a sensible epoch."""
    if best is None:
        return True
    return (stats["ua"], -stats["loss"]) > (best["ua"], -best["loss"])


def prepare_fold(params, fold):
    data = load_data_dir(params.data_dir)
    labels = read_list(params.labels)
    train, dev, test = fold_split(data, fold, dev_ratio=params.dev_ratio, seed=params.seed)
    if not train or not dev or not test:
        raise ValueError(f"fold {fold}: empty split (train {len(train)}, dev {len(dev)}, test {len(test)}) "
                         f"from {params.data_dir}/utt2fold")
    split = {"train": train, "dev": dev, "test": test}
    targets = {name: targets_of(data, params.task, labels, utts, params.data_dir) for name, utts in split.items()}
    return labels, split, targets


def run(params, fold, fold_dir, rank, world, device):
    labels, split, targets = prepare_fold(params, fold)
    if rank == 0:
        for name, utts in split.items():
            write_list(fold_dir / f"{name}.list", utts)
    reader = FeatureReader(params.feat_dir)
    meta = reader.meta
    torch.manual_seed(params.seed)  # identical initialisation on every rank
    model_conf = merge_conf(params.model_conf, {"model": params.model})
    model = build_model(model_conf, labels=labels, input_dim=meta["dim"], num_layers=meta["num_layers"]).to(device)
    log.info("fold %s: train %d, dev %d, test %d utterances; %s with %.2fM parameters",
             fold, len(split["train"]), len(split["dev"]), len(split["test"]), params.model,
             sum(p.numel() for p in model.parameters()) / 1e6)
    log.info("model config: %s", model.config)
    crop_rng = random.Random(params.seed + rank)
    train_loader, sampler, dev_loader = make_loaders(
        params=params, reader=reader, split=split, targets=targets, world=world, rank=rank, crop_rng=crop_rng)
    optimizer = torch.optim.AdamW(model.parameters(), lr=params.lr, weight_decay=params.weight_decay)
    state = {"epoch": 1, "step": 0, "best": None, "best_epoch": 0, "history": [],
             "warmup_steps": max(1, int(params.warmup_epochs * len(train_loader))),
             "total_steps": params.epochs * len(train_loader)}
    ckpt_path = fold_dir / "checkpoint.pt"
    if ckpt_path.exists():
        state = load_checkpoint(ckpt_path, model, optimizer)
        log.info("resuming from %s at epoch %d", ckpt_path, state["epoch"])
    ddp_model = DistributedDataParallel(LossModule(model)) if world > 1 \
        else LossModule(model)
    fit(params=params, model=model, ddp_model=ddp_model, optimizer=optimizer, state=state, loaders=(
        train_loader, sampler, dev_loader), device=device, rank=rank, fold=fold,
        fold_dir=fold_dir, meta=meta)


def fit(*, params, model, ddp_model, optimizer, state, loaders, device, rank, fold, fold_dir, meta):
    train_loader, sampler, dev_loader = loaders
    while state["epoch"] <= params.epochs:
        epoch, start = state["epoch"], time.time()
        if sampler is not None:
            sampler.set_epoch(epoch)
        train_loss = train_one_epoch(ddp_model=ddp_model, loader=train_loader, optimizer=optimizer, params=params,
                                     state=state, device=device, rank=rank)
        stats = evaluate(model, dev_loader, device, params.eval_nsteps, params.seed)
        improved = is_better(stats, state["best"])
        if improved:
            state["best"], state["best_epoch"] = stats, epoch
        state["history"].append({"epoch": epoch, "train_loss": train_loss, **stats})
        log.info("epoch %d: train loss %.4f | dev loss %.4f UA %.2f WA %.2f%s | %.1fs", epoch, train_loss,
                 stats["loss"], 100 * stats["ua"], 100 * stats["wa"], " (best)" if improved else "",
                 time.time() - start)
        state["epoch"] = epoch + 1
        if rank == 0:
            if improved:
                save_model(fold_dir / "model.pt", model, extra={
                    "feats": meta, "task": params.task, "fold": fold, "epoch": epoch, "dev": stats})
            save_checkpoint(fold_dir / "checkpoint.pt", model, optimizer, state)
        if params.patience and epoch - state["best_epoch"] >= params.patience:
            log.info("no dev improvement for %d epochs: stopping", params.patience)
            break
    if rank == 0:
        best = state["best"]
        log.info("best epoch %d: dev UA %.2f WA %.2f", state["best_epoch"], 100 * best["ua"], 100 * best["wa"])
        (fold_dir / "train.done").write_text(f"best_epoch {state['best_epoch']}\n")


def main(argv=None):
    params = load_config(get_parser(), argv)
    if params.config:  # a --model_conf on the command line refines the config file's, key by key
        params.model_conf = merge_conf(read_yaml(params.config).get("model_conf") or {}, params.model_conf)
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
    if (fold_dir / "train.done").exists():
        log.info("%s exists: fold %s is trained, nothing to do", fold_dir / "train.done", fold)
    else:
        random.seed(params.seed)
        np.random.seed(params.seed)
        log.info("world size %d, device %s; options: %s", world, device, vars(params))
        run(params, fold, fold_dir, rank, world, device)
    if world > 1:
        # DDP's reducer sits in a reference cycle and outlives run(); if it is still alive when the
        # process group goes, gloo aborts the process at exit ("terminate called without an active
        # exception", about 1 run in 8 here). Collect it first, then leave together.
        gc.collect()
        dist.barrier()
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
