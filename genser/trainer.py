"""Training one fold: the epoch loop, exact resume, checkpoint averaging, divergence guard.

Used by ``genser.bin.train`` (the CLI, one fold under torchrun) and by the benchmarks, which
build the same datasets (``fold_datasets``) and train in-process (``fit_in_memory``). The protocol (docs/TRAINING.md):

- a fixed number of epochs; with no dev set (the default) ``model.pt`` is the average of the
  weights of the last ``average`` epochs, as ESPnet's ``average_nbest_models`` with the
  ``valid.loss`` criterion replaced by recency; with a dev set (a corpus' own ``dev`` fold, or
  ``dev_ratio > 0``) it is the average of the ``average`` best epochs on dev UA;
- every source of randomness of epoch ``e`` (data order, crops, dropout, TM times and noise,
  mixup) is reseeded from ``(seed, e, rank)`` at the start of the epoch, so a run resumed from the
  checkpoint of epoch ``e - 1`` repeats the uninterrupted run exactly;
- a non-finite loss or weight stops training with an error naming the epoch and step.
"""
import hashlib
import json
import logging
import math
import os
import random
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from tqdm import tqdm

from genser import cmvn
from genser.calibration import TEMPERATURE_BOUND
from genser.features import FeatureDataset, NormalizedDataset, StackedReader, pad_collate
from genser.checkpoint import torch_save_atomic
from genser.metrics import summarize

log = logging.getLogger("genser.train")

# The one source of training defaults (genser.bin.train's flags; conf/train.yaml may override).
# Chosen by bench/tune.py (nested cross-validation over training speakers), see docs/TRAINING.md.
TRAIN_DEFAULTS = {
    "epochs": 40,
    "batch_size": 32,
    "lr": 1.0e-3,
    "weight_decay": 1.0e-2,
    "warmup_epochs": 2.0,
    "grad_clip": 5.0,
    "dev_ratio": 0.0,
    "average": 5,
    "patience": 0,
    "eval_nsteps": 1,
    "max_frames": 1500,
    "class_balance": "none",
    # Per-speaker CMVN inside the model (genser/cmvn.py; docs/TRAINING.md "Evaluation protocols"):
    # none | speaker | auto (speaker where speaker and label are independent in the training
    # utterances), the relevance of the training moments in a speaker's, and the unit sizes that
    # training draws from (1: the clip alone, as a test clip under the clip protocol; all: all of
    # the speaker's clips). Relevance 2 with units of 1 to all clips: the best mean inner UA of both
    # heads under the clip protocol (bench/results/tune_emodb_whisper_clip.md).
    "feat_norm": "auto",
    "cmvn_relevance": 2.0,
    "norm_k": "1 2 4 8 all",
    # crossfit: after training, fit the posteriors' temperature on held-out training speakers,
    # each of calibrate_groups speaker groups held out in turn (calibrate_inner; one extra
    # training per group, on the other groups); inner: one group only (one extra training;
    # cheaper, and T rests on one group's clips); none: temperature 1. crossfit is the default: on
    # EmoDB's training speakers it gave both heads a better T than inner (docs/METHOD.md §6).
    "calibrate": "crossfit",
    # At most one group per speaker. Each calibration model sees (groups - 1) / groups of the
    # fold's training speakers, is less accurate than the fold's model, and fits it a T that is
    # too high; 5 groups narrowed that gap only partly on EmoDB at twice the cost (docs/METHOD.md
    # §6 "Where T is fitted").
    "calibrate_groups": 3,
}
CLASS_BALANCE = ("none", "sampler")
CALIBRATE = ("crossfit", "inner", "none")


class TrainingError(RuntimeError):
    """Training cannot go on (divergence, a checkpoint of another experiment)."""


def derive_seed(*keys):
    """A 63-bit seed from any tuple of keys (stable across processes and Python versions)."""
    digest = hashlib.sha256(repr(keys).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def seed_everything(seed):
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class LossModule(torch.nn.Module):
    """DDP synchronises gradients through forward(); the models expose loss() instead."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, feats, lengths, targets):
        return self.model.loss(feats, lengths, targets)


class EpochSampler(torch.utils.data.Sampler):
    """Indices of one epoch, a pure function of (seed, epoch): a permutation, or with ``weights``
    a draw with replacement (class-balanced sampling). Under DDP every rank takes every
    world-th index of the same order, padded so that all ranks run the same number of steps."""

    def __init__(self, n, seed, rank=0, world=1, weights=None):
        self.n, self.seed, self.rank, self.world = int(n), seed, rank, world
        self.weights = None if weights is None else torch.as_tensor(weights, dtype=torch.double)
        self.epoch = 1

    def set_epoch(self, epoch):
        self.epoch = int(epoch)

    def __len__(self):
        return math.ceil(self.n / self.world)

    def __iter__(self):
        g = torch.Generator().manual_seed(derive_seed(self.seed, "order", self.epoch))
        if self.weights is None:
            order = torch.randperm(self.n, generator=g)
        else:
            order = torch.multinomial(self.weights, self.n, replacement=True, generator=g)
        pad = len(self) * self.world - self.n
        order = torch.cat([order, order[:pad]])
        return iter(order[self.rank::self.world].tolist())


def class_balance_weights(targets):
    """Per-utterance sampling weights 1 / count(class): every class equally likely per draw."""
    counts = np.bincount(np.asarray(targets))
    return [1.0 / counts[t] for t in targets]


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


def average_state_dicts(states):
    """Element-wise mean of state dicts (floating tensors; integer buffers such as counters are
    taken from the last one). The mean is accumulated in float64."""
    if not states:
        raise ValueError("nothing to average")
    out = {}
    for key, last in states[-1].items():
        if torch.is_floating_point(last):
            acc = torch.zeros_like(last, dtype=torch.float64)
            for s in states:
                acc += s[key].to(torch.float64)
            out[key] = (acc / len(states)).to(last.dtype)
        else:
            out[key] = last.clone()
    return out


def check_finite_weights(model, where):
    bad = [name for name, p in model.state_dict().items()
           if torch.is_floating_point(p) and not bool(torch.isfinite(p).all())]
    if bad:
        raise TrainingError(f"{where}: non-finite weights in {', '.join(bad[:3])}"
                            f"{' ...' if len(bad) > 3 else ''}; the model diverged (lower --lr, set --grad_clip)")


@torch.no_grad()
def evaluate(model, loader, device, nsteps, seed):
    """UA/WA and loss on a loader; sampling is seeded so that model selection is reproducible."""
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


def dev_key(stats):
    """Dev UA first; dev loss breaks ties so that a flat UA still ranks epochs sensibly."""
    return (stats["ua"], -stats["loss"])


def epochs_to_average(history, average, use_dev):
    """The epochs whose weights make model.pt: the last ``average``, or the ``average`` best on dev."""
    epochs = [h["epoch"] for h in history]
    if not use_dev:
        return epochs[-average:]
    ranked = sorted(history, key=lambda h: (dev_key(h["dev"]), h["epoch"]), reverse=True)
    return sorted(h["epoch"] for h in ranked[:average])


class Snapshots:
    """Per-epoch weights under <fold_dir>/snapshots, pruned to those that can still be averaged
    (in memory when there is no folder: in-process benchmarks, which need no resume)."""

    def __init__(self, folder):
        self.folder = None if folder is None else Path(folder)
        self.memory = {}

    def path(self, epoch):
        return self.folder / f"epoch{epoch:04d}.pt"

    def save(self, epoch, model):
        weights = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        if self.folder is None:
            self.memory[epoch] = weights
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        torch_save_atomic(weights, self.path(epoch))

    def load(self, epoch):
        if self.folder is None:
            return self.memory[epoch]
        return torch.load(self.path(epoch), map_location="cpu", weights_only=True)

    def prune(self, keep):
        if self.folder is None:
            self.memory = {e: w for e, w in self.memory.items() if e in keep}
            return
        keep = {self.path(e).name for e in keep}
        for f in self.folder.glob("epoch*.pt"):
            if f.name not in keep:
                f.unlink()


def train_one_epoch(*, model, step_model, loader, optimizer, params, state, device, rank, where):
    """One pass over the loader; ``step_model`` is the (DDP-wrapped) loss module."""
    step_model.train()
    total, count = 0.0, 0
    for feats, lengths, targets in tqdm(loader, desc=f"epoch {state['epoch']}", disable=rank != 0,
                                        mininterval=5, leave=False):
        feats, lengths, targets = feats.to(device), lengths.to(device), targets.to(device)
        for group in optimizer.param_groups:
            group["lr"] = params["lr"] * lr_factor(state["step"], state["warmup_steps"], state["total_steps"])
        loss, _ = step_model(feats, lengths, targets)
        if not bool(torch.isfinite(loss)):
            raise TrainingError(f"{where}: non-finite loss ({loss.item()}) at epoch {state['epoch']}, step "
                                f"{state['step'] + 1}; the model diverged (lower --lr, set --grad_clip)")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if params["grad_clip"] > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), params["grad_clip"])
        optimizer.step()
        state["step"] += 1
        total += loss.item() * len(targets)
        count += len(targets)
    check_finite_weights(model, f"{where}, epoch {state['epoch']}, step {state['step']}")
    return total / max(count, 1)


def save_checkpoint(path, model, optimizer, state):
    torch_save_atomic({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "state": state}, path)


def load_checkpoint(path, model, optimizer, identity):
    """Restores model and optimizer and returns the loop state; refuses another experiment's
    checkpoint (``identity``: the run's {"hash", "parts"}, see ``run_identity``)."""
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    state = ckpt["state"]
    old = state.get("identity") or {}
    if old.get("hash") != identity["hash"]:
        raise TrainingError(f"{path} was written by another experiment ({describe_difference(old.get('parts', {}), identity['parts'])}); "
                            f"remove {Path(path).parent} or train into a new exp dir")
    model.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    return state


def run_identity(parts):
    """{"hash", "parts"}: a short hash of everything that decides a training run's result."""
    parts = {k: parts[k] for k in sorted(parts)}
    return {"hash": hashlib.sha256(repr(parts).encode()).hexdigest()[:16], "parts": parts}


def done_text(identity, averaged_epochs):
    """train.done: the identity's hash (what decoding and scoring read) and its parts, one JSON line,
    so that a later run with other inputs can say which of them changed."""
    return (f"identity {identity['hash']}\nidentity_parts {json.dumps(identity['parts'], default=str)}\n"
            f"averaged_epochs {averaged_epochs}\n")


def done_difference(path, identity):
    """None when the train.done at ``path`` records ``identity``; otherwise what differs, in words.

    A train.done written before the parts were kept has only the hash: then all it can say is that
    data, features or settings changed."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    fields = dict(line.split(" ", 1) for line in lines if " " in line)
    if fields.get("identity", "").strip() == identity["hash"]:
        return None
    head = f"identity {fields.get('identity', '?').strip()}, this run {identity['hash']}"
    if "identity_parts" not in fields:
        return f"{head}: data, features or settings changed ({path} records no more than the hash)"
    old = json.loads(fields["identity_parts"])
    new = json.loads(json.dumps(identity["parts"], default=str))
    return f"{head}; what changed: {describe_difference(old, new)}"


def describe_difference(old, new):
    """'key: old -> new; ...' for the entries of two identity part dicts that differ."""
    keys = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    if not keys:
        return "no recorded identity"
    return "; ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in keys[:4])


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


def speaker_norm(*, train_set, dev_set, spk_of, relevance, norm_k, seed):
    """Per-speaker CMVN of a fold's datasets: (the model's ``norm`` entry, train set, dev set).

    The prior moments are those of the training items only, so a test speaker's statistics never
    enter the model. ``spk_of(key)`` is an item's speaker (a speed-perturbed copy is its own
    speaker: its moments differ). Dev items are normalised clip by clip, as the headline protocol
    decodes test ones.
    """
    moments = cmvn.utterance_moments(train_set.reader, train_set.utts)
    prior = cmvn.fit_prior(moments.values(), relevance)
    norm = cmvn.SpeakerNorm(moments, {k: spk_of(k) for k in moments}, prior)
    train = NormalizedDataset(train_set, norm, cmvn.parse_norm_k(norm_k), seed)
    dev = None
    if dev_set is not None:
        dev_norm = cmvn.SpeakerNorm(cmvn.utterance_moments(dev_set.reader, dev_set.utts),
                                    {k: spk_of(k) for k in dev_set.utts}, prior)
        dev = NormalizedDataset(dev_set, dev_norm, [1], seed)
    return prior, train, dev


def fold_datasets(*, sources, train_utts, train_targets, dev_utts, dev_targets, spk, norm_kind, params):
    """(train set, dev set or None, the model's ``norm`` entry or None) of one fold.

    Items are (dump index, utt): the main dump (index 0), then its speed-perturbed copies, which
    add a copy of every training utterance (never of dev ones). With ``norm_kind`` 'speaker' the
    sets are normalised per speaker (``speaker_norm``; a perturbed copy is its own speaker).
    """
    items = [(i, u) for i in range(len(sources)) for u in train_utts]
    train_set = FeatureDataset(StackedReader(sources), items, list(train_targets) * len(sources))
    dev_set = FeatureDataset(StackedReader(sources[:1]), [(0, u) for u in dev_utts], dev_targets) if dev_utts else None
    if norm_kind != "speaker":
        return train_set, dev_set, None
    prior, train_set, dev_set = speaker_norm(
        train_set=train_set, dev_set=dev_set, spk_of=lambda key: (key[0], spk[key[1]]),
        relevance=params["cmvn_relevance"], norm_k=params["norm_k"], seed=params["seed"])
    return train_set, dev_set, {**prior, "norm_k": params["norm_k"]}


def fit_in_memory(*, model, train_set, params, device, where):
    """``fit`` with nothing written (no checkpoint, no resume): benchmarks and auxiliary models."""
    loaders = build_loaders(dataset=train_set, dev_dataset=None, params=params, world=1, rank=0, collate=pad_collate)
    state = new_state(params, len(loaders["train"]), run_identity({}))
    fit(model=model, step_model=LossModule(model), optimizer=make_optimizer(model, params), loaders=loaders,
        params=params, state=state, device=device, rank=0, fold_dir=None, where=where, save_model_fn=None)
    return model


def calibration_groups(train_utts, targets, spk, seed, groups):
    """The speaker groups calibrate_inner holds out: ``groups`` groups (at most one per speaker)
    of the training speakers, dealt with like label distributions
    (genser.folds.label_balanced_groups) from a seed derived from ``seed``; empty ones dropped."""
    from genser.folds import label_balanced_groups

    if int(groups) != groups or groups < 2:
        raise ValueError(f"calibration needs at least 2 speaker groups, got {groups}")
    speakers = sorted({spk[u] for u in train_utts})
    num_classes = max(targets[u] for u in train_utts) + 1
    counts = {s: [0] * num_classes for s in speakers}
    for u in train_utts:
        counts[spk[u]][targets[u]] += 1
    dealt = label_balanced_groups(counts, min(groups, len(speakers)), derive_seed(seed, "calibrate"))
    return [g for g in dealt if g]


def calibrate_inner(*, build, sources, train_utts, targets, spk, norm_kind, params, device, where, crossfit=False):
    """(temperature, report) fitted on held-out training speakers, or (1.0, reason) where there
    are fewer than 2 training speakers.

    A model of the same configuration (``build()`` makes it) is trained on the training speakers
    outside one of ``params["calibrate_groups"]`` inner groups (with like label distributions:
    genser.folds.label_balanced_groups) and decodes the held-out group clip by clip (the headline
    protocol); with ``crossfit`` every group is held out in turn (one model per group), so that
    every training speaker is decoded once. The temperature minimises the scoring rule of the
    model's ``posterior.fit`` (NLL by default) on the pooled held-out posteriors. The test fold is
    never read.
    """
    from genser.calibration import brier, fit_temperature, nll, temperature_scale
    from genser.decoding import decode

    speakers = {spk[u] for u in train_utts}
    if len(speakers) < 2:
        return 1.0, f"not calibrated: {len(speakers)} training speaker(s), none to hold out"
    dealt = calibration_groups(train_utts, targets, spk, params["seed"], params["calibrate_groups"])
    probs, refs, held_all = [], [], []
    used = dealt if crossfit else dealt[:1]
    for g, held in enumerate(used):
        held = set(held)
        fit_utts = [u for u in train_utts if spk[u] not in held]
        val_utts = [u for u in train_utts if spk[u] in held]
        train_set, _, norm = fold_datasets(sources=sources, train_utts=fit_utts,
                                           train_targets=[targets[u] for u in fit_utts], dev_utts=[], dev_targets=[],
                                           spk=spk, norm_kind=norm_kind, params=params)
        torch.manual_seed(derive_seed(params["seed"], "calibrate", *([g] if g else [])))
        model = fit_in_memory(model=build().to(device), train_set=train_set, params=params, device=device,
                              where=f"{where}, calibration model {g + 1}")
        val = protocol_dataset(FeatureDataset(sources[0], val_utts, [targets[u] for u in val_utts]), norm,
                               spk.__getitem__, "clip", params["seed"])
        loader = torch.utils.data.DataLoader(val, batch_size=64, collate_fn=pad_collate)
        probs.append(np.asarray(decode(model, loader, nsteps=1, eta=0.0, generator=None, device=device)[1]))
        refs += [targets[u] for u in val_utts]
        held_all += sorted(held)
    probs, refs = np.concatenate(probs), np.array(refs)
    objective = model.config["posterior"]["fit"]
    t = fit_temperature(probs, refs, hi=TEMPERATURE_BOUND, objective=objective)
    scaled = temperature_scale(probs, t)
    report = (f"temperature {t:.3f} (fitted by {objective}) from {len(refs)} utterances of {len(held_all)} "
              f"held-out training speaker(s) in {len(used)} group(s) of {len(dealt)} ({' '.join(held_all)}): "
              f"NLL {nll(probs, refs):.3f} -> {nll(scaled, refs):.3f}, Brier {brier(probs, refs):.3f} -> "
              f"{brier(scaled, refs):.3f}")
    if t >= 0.999 * TEMPERATURE_BOUND:
        # the score still falls at the bound: uniform posteriors beat the model's on these speakers
        report += (f"; at the search bound {TEMPERATURE_BOUND:g}: the held-out posteriors are no better than "
                   f"chance (speaker and label dependent?)" + ("" if crossfit else
                   "; --calibrate crossfit holds out every training speaker once"))
        log.warning("%s: calibration %s", where, report)
    return t, report


def protocol_dataset(base, norm_entry, spk_of, protocol, seed):
    """The test items of ``base`` as a protocol decodes them (genser/cmvn.py): unchanged for a
    model without normalisation, else each clip within its unit of the protocol."""
    if not norm_entry or norm_entry.get("kind", "speaker") != "speaker":
        return base
    norm = cmvn.SpeakerNorm(cmvn.utterance_moments(base.reader, base.utts), {k: spk_of(k) for k in base.utts},
                            norm_entry)
    return NormalizedDataset(base, norm, [cmvn.protocol_k(protocol)], seed)


def build_loaders(*, dataset, dev_dataset, params, world, rank, collate):
    """Training loader over an EpochSampler (optionally class-balanced), and a dev loader or None.
    Crops come from a random.Random that ``fit`` reseeds every epoch."""
    weights = class_balance_weights(dataset.targets) if params["class_balance"] == "sampler" else None
    sampler = EpochSampler(len(dataset), params["seed"], rank=rank, world=world, weights=weights)
    crop_rng = random.Random(0)
    train_loader = torch.utils.data.DataLoader(
        dataset, batch_size=params["batch_size"], sampler=sampler,
        collate_fn=lambda b: collate(crop_batch(b, params["max_frames"], crop_rng)))
    dev_loader = None if dev_dataset is None else torch.utils.data.DataLoader(
        dev_dataset, batch_size=max(64, params["batch_size"]), collate_fn=collate)
    return {"train": train_loader, "sampler": sampler, "crop_rng": crop_rng, "dev": dev_loader}


def new_state(params, steps_per_epoch, identity):
    return {"epoch": 1, "step": 0, "history": [], "identity": identity,
            "warmup_steps": max(1, int(params["warmup_epochs"] * steps_per_epoch)),
            "total_steps": params["epochs"] * steps_per_epoch}


def fit(*, model, step_model, optimizer, loaders, params, state, device, rank, fold_dir, where, save_model_fn):
    """The epoch loop from ``state['epoch']`` to ``params['epochs']``, then the averaged model.pt.

    ``loaders``: from ``build_loaders``. ``save_model_fn(path, model, extra)`` writes model.pt.
    Rank 0 writes snapshots, the checkpoint and model.pt; with ``fold_dir`` None nothing is
    written (snapshots stay in memory, no resume). Returns the averaged epochs.
    """
    train_loader, sampler, dev_loader = loaders["train"], loaders["sampler"], loaders["dev"]
    snapshots = Snapshots(None if fold_dir is None else fold_dir / "snapshots")
    use_dev = dev_loader is not None
    while state["epoch"] <= params["epochs"]:
        epoch, start = state["epoch"], time.time()
        seed_everything(derive_seed(params["seed"], "epoch", epoch, rank))
        sampler.set_epoch(epoch)
        if hasattr(train_loader.dataset, "set_epoch"):  # per-epoch draws of speaker units
            train_loader.dataset.set_epoch(epoch)
        loaders["crop_rng"].seed(derive_seed(params["seed"], "crop", epoch, rank))
        train_loss = train_one_epoch(model=model, step_model=step_model, loader=train_loader, optimizer=optimizer,
                                     params=params, state=state, device=device, rank=rank, where=where)
        entry = {"epoch": epoch, "train_loss": train_loss}
        msg = f"epoch {epoch}: train loss {train_loss:.4f}"
        if use_dev:
            entry["dev"] = evaluate(model, dev_loader, device, params["eval_nsteps"], params["seed"])
            msg += f" | dev loss {entry['dev']['loss']:.4f} UA {100 * entry['dev']['ua']:.2f}"
        state["history"].append(entry)
        log.info("%s | lr %.2e | %.1fs", msg, optimizer.param_groups[0]["lr"], time.time() - start)
        state["epoch"] = epoch + 1
        keep = epochs_to_average(state["history"], params["average"], use_dev)
        if rank == 0:
            if epoch in keep:
                snapshots.save(epoch, model)
            snapshots.prune(keep)
            if fold_dir is not None:
                save_checkpoint(fold_dir / "checkpoint.pt", model, optimizer, state)
        if use_dev and params["patience"]:
            best = max(state["history"], key=lambda h: dev_key(h["dev"]))["epoch"]
            if epoch - best >= params["patience"]:
                log.info("no dev improvement for %d epochs: stopping", params["patience"])
                break
    keep = epochs_to_average(state["history"], params["average"], use_dev)
    if rank == 0:
        model.load_state_dict(average_state_dicts([snapshots.load(e) for e in keep]))
        check_finite_weights(model, f"{where}, averaged model")
        extra = {"averaged_epochs": keep, "epochs": len(state["history"])}
        if use_dev:
            extra["dev"] = evaluate(model, dev_loader, device, params["eval_nsteps"], params["seed"])
            log.info("averaged epochs %s: dev UA %.2f WA %.2f", keep, 100 * extra["dev"]["ua"],
                     100 * extra["dev"]["wa"])
        else:
            log.info("model.pt: average of epochs %s", keep)
        if fold_dir is not None:
            save_model_fn(fold_dir / "model.pt", model, extra)
    return keep


def make_optimizer(model, params):
    """AdamW; the multi-tensor (foreach) update is several times faster on CPU for small models."""
    return torch.optim.AdamW(model.parameters(), lr=params["lr"], weight_decay=params["weight_decay"], foreach=True)
