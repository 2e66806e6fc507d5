"""One training run of one fold, as genser-train runs it: its inputs (split, features, speed-
perturbed copies, normalisation), its identity (a hash of everything that decides its result,
recorded in train.done and every checkpoint, so that a changed input is never reused) and the run
itself (``train_fold``: model, datasets, the epoch loop of genser.trainer, calibration, model.pt).
The CLI, genser.bin.train, parses options and sets up the processes; docs/TRAINING.md describes
the protocol.
"""
import hashlib
import logging
from pathlib import Path

import torch
import yaml
from torch.nn.parallel import DistributedDataParallel

from genser import trainer
from genser.checkpoint import save_model
from genser.cmvn import choose_feat_norm
from genser.config import merge, resolve_config
from genser.datadir import ATTR_OF_TASK, load_data_dir
from genser.features import FEATURE_KIND, FeatureReader, kind_differences, model_layers, pad_collate, read_scp
from genser.fileio import atomic_write, read_list, write_list
from genser.folds import fold_split
from genser.models import build_model
from genser.taxonomy import format_cosine_matrix
from genser.trainer import TRAIN_DEFAULTS, TrainingError

log = logging.getLogger("genser.train")

# Options that decide where and how fast a run goes, not what it computes: left out of its identity.
NOT_IDENTITY = ("config", "exp_dir", "fold_list", "fold_index", "device", "num_threads", "feat_dir",
                "data_dir", "labels", "speed_perturb_dirs")


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
    if parts.get("calibrate_groups") == 3:  # its value before the option existed: those runs keep their identity
        del parts["calibrate_groups"]
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


def prepare_fold(params, fold, data):
    """(labels, split, targets) of fold ``fold`` of the data dir ``data``."""
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


def fold_norm(params, split, reader, data):
    """The fold's normalisation kind ('speaker' or 'none') and the speaker-label dependence of
    its training and dev utterances (never the test fold's), logged."""
    attr = getattr(data, ATTR_OF_TASK[params.task])
    seen = split["train"] + split["dev"]
    kind, dep = choose_feat_norm(params.feat_norm, data.spk, {u: attr[u] for u in seen})
    if kind == "speaker" and reader.meta.get("cmvn"):
        raise ValueError(f"{reader.feat_dir} is already normalised ({reader.meta['cmvn'].get('group')}); "
                         f"train with --feat_norm none, or on the raw dump")
    log.info("feature normalisation: %s (--feat_norm %s; speaker-label dependence %.3f over %d training "
             "utterances)", kind, params.feat_norm, dep, len(seen))
    return kind, dep


def train_fold(params, fold, fold_dir, rank, world, device):
    """Trains fold ``fold`` into ``fold_dir`` (rank 0 writes), or returns at once when train.done
    holds this run's identity; refuses (TrainingError) a fold dir of another run, naming what changed."""
    data = load_data_dir(params.data_dir)
    labels, split, targets = prepare_fold(params, fold, data)
    reader = FeatureReader(params.feat_dir)
    meta = reader.meta
    norm_kind, dependence = fold_norm(params, split, reader, data)
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
    spk = data.spk
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
        """model.pt (rank 0, once the epochs are averaged), with the temperature calibrated first,
        so that the model is written once and holds it."""
        if params.calibrate != "none":
            model.temperature, report = trainer.calibrate_inner(
                build=lambda: build_model(model_conf, labels=labels, input_dim=meta["dim"],
                                          num_layers=model_layers(meta)),
                sources=sources, train_utts=split["train"] + split["dev"],
                targets=dict(zip(split["train"] + split["dev"], targets["train"] + targets["dev"])), spk=spk,
                norm_kind=norm_kind, params=hp, device=device, where=f"fold {fold}",
                crossfit=params.calibrate == "crossfit")
            log.info("calibration (%s): %s", params.calibrate, report)
            # read by the calibration study of stage 5 (genser.calibration_study.stored_temperature)
            atomic_write(fold_dir / "calibration", f"temperature {model.temperature:.6f}\n{report}\n")
        extra = {**extra, "feats": meta, "task": params.task, "fold": fold, "identity": identity["hash"],
                 "feat_norm": {"requested": params.feat_norm, "kind": norm_kind, "dependence": dependence}}
        save_model(path, model, extra={**extra, "norm": norm} if norm else extra)

    keep = trainer.fit(model=model, step_model=step_model, optimizer=optimizer, loaders=loaders, params=hp,
                       state=state, device=device, rank=rank, fold_dir=fold_dir, where=f"fold {fold}",
                       save_model_fn=save)
    if rank == 0:
        # read by scoring (genser.report.fold_norms): which normalisation each fold's model holds
        atomic_write(fold_dir / "feat_norm", f"{norm_kind} {dependence:.4f}\n")
        atomic_write(fold_dir / "train.done", trainer.done_text(identity, keep))
