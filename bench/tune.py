#!/usr/bin/env python3
"""Choose the recipe defaults by cross-validation over training speakers only (nested CV).

    python bench/tune.py --feat_dir egs/emodb/dump/whisper_base_mean --data_dir egs/emodb/data/all \
        --grid bench/conf/tune_grid.yaml --out bench/results/tune_emodb_whisper.md

For every outer test fold, the training speakers are split into ``--inner`` speaker-disjoint
groups; every candidate configuration of the grid is trained on all groups but one and scored
on the held-out group, for each group in turn, and its inner UA is pooled over the groups. The
outer test fold is never read while choosing. Two results come out:

- the **nested estimate**: per outer fold, the candidate with the best inner UA is retrained on
  all training speakers and scored on the test fold (the honest figure of "tune, then test");
- the **mean inner UA** of every candidate over the outer folds, which ranks candidates for a
  single default (each outer fold's ranking used its training speakers only).

Training is the library's (genser.trainer.fit, the protocol of genser-train) on in-memory
utterance features; each run takes seconds, so the grid fits a CPU.
"""
import argparse
import copy
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import machine_description, write_results  # noqa: E402

from genser import trainer  # noqa: E402
from genser.cmvn import choose_feat_norm, protocol_k  # noqa: E402
from genser.datadir import ATTR_OF_TASK, load_data_dir  # noqa: E402
from genser.features import FeatureDataset, FeatureReader, load_all, pad_collate  # noqa: E402
from genser.folds import inner_splits, test_folds  # noqa: E402
from genser.metrics import summarize  # noqa: E402
from genser.models import build_model  # noqa: E402


def nested_cv_arguments(p):
    """The options of a nested CV over a feature dump (this script and calibration_maps.py)."""
    p.add_argument("--feat_dir", required=True, help="feature dump (utterance means are fastest)")
    p.add_argument("--data_dir", required=True)
    p.add_argument("--task", default="emotion", choices=sorted(ATTR_OF_TASK))
    p.add_argument("--inner", type=int, default=3, help="speaker groups of the inner CV")
    p.add_argument("--outer", default="all", help='outer test folds: "all" or a list')
    p.add_argument("--jobs", type=int, default=2, help="parallel training processes")
    return p


def load_task(args):
    """(data dir, labels, {utt: features}, {utt: class index}, outer folds) of the options above."""
    data = load_data_dir(args.data_dir)
    attr = ATTR_OF_TASK[args.task]
    labels = sorted(set(getattr(data, attr).values()))
    feats = load_all(FeatureReader(args.feat_dir), data.utts)
    targets = {u: labels.index(getattr(data, attr)[u]) for u in data.utts}
    outer = test_folds(data) if args.outer == "all" else args.outer.split()
    return data, labels, feats, targets, outer


def get_parser():
    p = nested_cv_arguments(argparse.ArgumentParser(description=__doc__,
                                                    formatter_class=argparse.RawDescriptionHelpFormatter))
    p.add_argument("--grid", required=True, help="YAML: {name: {model: genser|classifier|both, train: {...}, "
                                                 "model_conf: {...}}}")
    p.add_argument("--protocol", default="clip",
                   help="evaluation protocol of the held-out speakers (genser/cmvn.py): clip, speaker-<K>, speaker-all")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--speed_perturb_dirs", default="",
                   help="speed-perturbed dumps of the same utterances (ser.sh --speed_perturb_factors); a "
                        "candidate with 'speed_perturb: true' adds their copies of its fit utterances")
    p.add_argument("--out", required=True)
    return p


def fit_job(job):
    """(model trained on job["train_utts"], job["test_utts"] as job["protocol"] decodes them)."""
    torch.set_num_threads(1)
    feats, data, spk = job["feats"], job["targets"], job["spk"]
    params = {**trainer.TRAIN_DEFAULTS, **job["train"], "seed": job["seed"]}
    torch.manual_seed(params["seed"])
    conf = {**copy.deepcopy(job["model_conf"]), "model": job["model"]}
    any_feat = next(iter(feats.values()))
    model = build_model(conf, job["labels"], input_dim=any_feat.shape[2], num_layers=any_feat.shape[1])
    # as genser-train: perturbed copies of the fit utterances only, normalised from the fit speakers
    sources = [feats, *job["perturbed"]] if job["speed_perturb"] else [feats]
    kind, _ = choose_feat_norm(params["feat_norm"], spk, {u: data[u] for u in job["train_utts"]})
    train_set, _, prior = trainer.fold_datasets(
        sources=sources, train_utts=job["train_utts"], train_targets=[data[u] for u in job["train_utts"]],
        dev_utts=[], dev_targets=[], spk=spk, norm_kind=kind, params=params)
    trainer.fit_in_memory(model=model, train_set=train_set, params=params, device=torch.device("cpu"),
                          where=str(job["key"]))
    test = trainer.protocol_dataset(FeatureDataset(feats, job["test_utts"], [data[u] for u in job["test_utts"]]),
                                    prior, spk.__getitem__, job["protocol"], params["seed"])
    return model, test


def train_and_predict(job):
    """One training on job["train"] utterances, predictions on job["test"] under job["protocol"]:
    (job key, refs, hyps)."""
    model, test = fit_job(job)
    batch = pad_collate([test[i] for i in range(len(test))])
    out = model.predict(batch[0], batch[1], nsteps=1, generator=torch.Generator().manual_seed(0))
    return job["key"], batch[2].tolist(), out["pred"].tolist()


def main(argv=None):
    args = get_parser().parse_args(argv)
    start = time.time()
    data, labels, feats, targets, outer = load_task(args)
    grid = yaml.safe_load(Path(args.grid).read_text())
    perturbed = [load_all(FeatureReader(d), data.utts) for d in args.speed_perturb_dirs.replace(",", " ").split()]
    candidates = []  # (model, name, train, model_conf)
    for name, c in grid.items():
        if c.get("speed_perturb") and not perturbed:
            raise SystemExit(f"candidate {name} asks for speed_perturb: give --speed_perturb_dirs")
        kinds = ["genser", "classifier"] if c.get("model", "both") == "both" else [c["model"]]
        candidates += [(m, name, c.get("train", {}), c.get("model_conf", {})) for m in kinds]
    sp = {name: bool(c.get("speed_perturb")) for name, c in grid.items()}
    protocol_k(args.protocol)  # a clear error before any training
    common = {"feats": feats, "targets": targets, "labels": labels, "seed": args.seed, "perturbed": perturbed,
              "spk": dict(data.spk), "protocol": args.protocol}
    jobs = []
    for fold in outer:
        for g, (fit_utts, val_utts) in enumerate(inner_splits(data, fold, args.inner, args.seed)):
            for model, name, tr, mc in candidates:
                jobs.append({**common, "key": ("inner", fold, model, name, g), "model": model, "train": tr,
                             "model_conf": mc, "speed_perturb": sp[name], "train_utts": fit_utts,
                             "test_utts": val_utts})
    results = run_jobs(jobs, args.jobs)
    inner = {}  # (fold, model, name) -> UA pooled over the inner groups
    for fold in outer:
        for model, name, _, _ in candidates:
            refs, hyps = [], []
            for g in range(args.inner):
                r, h = results[("inner", fold, model, name, g)]
                refs += r
                hyps += h
            inner[fold, model, name] = summarize(refs, hyps, len(labels))["ua"]
    # nested estimate: the inner winner per outer fold, retrained on all training speakers
    final_jobs = []
    chosen = {}
    for fold in outer:
        train_utts = [u for u in data.utts if data.fold[u] != fold]
        test_utts = [u for u in data.utts if data.fold[u] == fold]
        for model in sorted({c[0] for c in candidates}):
            names = [c for c in candidates if c[0] == model]
            best = max(names, key=lambda c: (inner[fold, model, c[1]], -names.index(c)))
            chosen[fold, model] = best[1]
            final_jobs.append({**common, "key": ("outer", fold, model), "model": model, "train": best[2],
                               "model_conf": best[3], "speed_perturb": sp[best[1]], "train_utts": train_utts,
                               "test_utts": test_utts})
    results.update(run_jobs(final_jobs, args.jobs))
    body = render(args, outer, candidates, inner, chosen, results, labels, time.time() - start)
    write_results(Path(args.out), title=f"Nested CV of the recipe defaults: {args.task}, {args.feat_dir}",
                  body=body, argv=sys.argv if argv is None else ["bench/tune.py", *argv])


def run_jobs(jobs, n, fn=train_and_predict):
    """{key: (refs, out)} of ``fn(job) -> (key, refs, out)`` over the jobs, n processes."""
    out = {}
    with ProcessPoolExecutor(n) as pool:
        for key, refs, result in pool.map(fn, jobs, chunksize=1):
            out[key] = (refs, result)
            print(f"{len(out)}/{len(jobs)} {key}", flush=True)
    return out


def render(args, outer, candidates, inner, chosen, results, labels, elapsed):
    models = sorted({c[0] for c in candidates})
    lines = [machine_description(), f"Inner groups: {args.inner}; seed {args.seed}; {len(outer)} outer folds; "
             f"{elapsed / 60:.1f} min. Held-out and test speakers are scored under the **{args.protocol}** "
             f"protocol (genser/cmvn.py).", "", "## Mean inner UA per candidate (training speakers only)", "",
             "| model | candidate | mean inner UA | std over outer folds | times chosen |", "|---|---|---|---|---|"]
    for model, name, _, _ in candidates:
        vals = [inner[f, model, name] for f in outer]
        n = sum(chosen[f, model] == name for f in outer)
        lines.append(f"| {model} | {name} | {100 * statistics.mean(vals):.1f} | "
                     f"{100 * statistics.pstdev(vals):.1f} | {n} |")
    lines += ["", "## Nested estimate (inner winner retrained, scored on the outer test fold)", "",
              "| model | mean UA over folds | pooled UA | per fold (chosen candidate) |", "|---|---|---|---|"]
    for model in models:
        uas, refs, hyps, cells = [], [], [], []
        for f in outer:
            r, h = results["outer", f, model]
            uas.append(summarize(r, h, len(labels))["ua"])
            refs += r
            hyps += h
            cells.append(f"{f}: {100 * uas[-1]:.1f} ({chosen[f, model]})")
        pooled = summarize(refs, hyps, len(labels))["ua"]
        lines.append(f"| {model} | {100 * statistics.mean(uas):.1f} | {100 * pooled:.1f} | {'; '.join(cells)} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
