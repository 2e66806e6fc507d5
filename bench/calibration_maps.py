#!/usr/bin/env python3
"""Which map from a model's output to posteriors calibrates best, judged on training speakers only.

    python bench/calibration_maps.py --feat_dir egs/emodb/dump/whisper_base_mean --data_dir egs/emodb/data/all \
        --out bench/results/calibration_maps_emodb_whisper.md

For every outer test fold, the training speakers are split into ``--inner`` speaker-disjoint
groups (genser.folds.inner_splits, as bench/tune.py); both heads are trained with the recipe
defaults on all groups but one and decode the held-out group clip by clip, so every training
speaker gets out-of-fold outputs. Each candidate map then gets its temperature from the other
groups' outputs and is scored on the held-out group (leave one group out), so no figure uses the
outer test fold, nor the data its own temperature was fitted on.

``--recipe_calibration inner|crossfit`` scores the temperature as genser-train fits it instead
(genser.trainer.calibrate_inner): for each inner group's model, calibration models are trained
within its own fit speakers (``--calibration_groups`` label-balanced groups, 3 as genser-train's
default; one held out, or each in turn), T is fitted on their held-out outputs and applied to
that model's outputs on the held-out inner group. This keeps what leave-one-group-out hides: the
calibration models see fewer speakers than the model they calibrate, so their T can be too high
for it.

Gen-SER's maps (x = the sampler's terminal sample, nsteps 1; c_k the codes, tau = tm.ce_tau):
- ``cosine``: softmax(cos(x, c_k) / tau), the posteriors genser has given so far;
- ``dot``: softmax(x . c_k / (|c|^2 tau)). Trained by MSE alone (tm.ce_weight 0), the one-step
  sample estimates E[c | speech] = sum_k p_k c_k (docs/METHOD.md §2.7), whose norm shrinks
  where the model hedges; the cosine throws that norm away. Same argmax (equal-norm codes).
The classifier's map is softmax(logits), for reference.
"""
import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import machine_description, write_results  # noqa: E402
from tune import fit_job, load_task, nested_cv_arguments, run_jobs  # noqa: E402

from genser.calibration import auroc, ece, ece_floor, fit_temperature, nll, temperature_scale  # noqa: E402
from genser.config import DEFAULT_CONFIG  # noqa: E402
from genser.features import pad_collate  # noqa: E402
from genser.folds import inner_splits  # noqa: E402
from genser.trainer import calibration_groups  # noqa: E402
from genser.taxonomy import project_simplex  # noqa: E402


def get_parser():
    p = nested_cv_arguments(argparse.ArgumentParser(description=__doc__,
                                                    formatter_class=argparse.RawDescriptionHelpFormatter))
    p.add_argument("--seeds", default="0", help="training seeds, each a full run")
    p.add_argument("--floors", default="0.001 0.01", help="floors of the barycentric map (mixed with 1/K)")
    p.add_argument("--objectives", default="nll brier",
                   help="scoring rules the temperature is fitted by (genser.calibration.TEMPERATURE_OBJECTIVES)")
    p.add_argument("--cache", default="", help="npz of the raw outputs: written after training, read instead of "
                                              "training when it exists (same arguments)")
    p.add_argument("--recipe_calibration", default="none", choices=("none", "inner", "crossfit"),
                   help="none: leave one inner group out; inner, crossfit: T as genser-train --calibrate fits it")
    p.add_argument("--calibration_groups", type=int, default=3,
                   help="speaker groups the calibration models hold out (genser-train --calibrate_groups)")
    p.add_argument("--calibration_cache", default="", help="npz of the calibration models' outputs (as --cache)")
    p.add_argument("--out", required=True)
    return p


def softmax(z):
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def train_and_output(job):
    """One training on the fit utterances (bench/tune.py's, the recipe defaults); the raw outputs
    on the held-out ones, clip by clip: (key, refs, raw outputs at T = 1)."""
    model, held = fit_job(job)
    x, lengths, refs = pad_collate([held[i] for i in range(len(held))])
    model.eval()
    with torch.no_grad():
        if job["model"] == "classifier":
            raw = {"logits": model.logits(x, lengths).double().numpy()}
        else:
            raw = {"sample": model.generate(x, lengths, nsteps=1).double().numpy(),
                   "codes": model.taxonomy.codes.double().numpy(), "tau": model.config["tm"]["ce_tau"]}
    return job["key"], refs.numpy(), raw


def simplex(v):
    return project_simplex(torch.from_numpy(v)).numpy()


def maps_of(raw, floor):
    """{map name: posteriors at T = 1} of one model's raw outputs."""
    if "logits" in raw:
        return {"softmax": softmax(raw["logits"])}
    x, codes, tau = raw["sample"], raw["codes"], raw["tau"]
    norm = np.linalg.norm(codes, axis=1)
    cos = (x / np.linalg.norm(x, axis=1, keepdims=True)) @ (codes / norm[:, None]).T
    out = {"cosine": softmax(cos / tau), "dot": softmax(x @ codes.T / norm ** 2 / tau)}
    # barycentric: the coordinates of x in the codes (least squares), as a point of the simplex
    coords = np.linalg.lstsq(codes.T, x.T, rcond=None)[0].T
    k = codes.shape[0]
    for f in floor:
        out[f"barycentric {f:g}"] = (1 - f) * simplex(coords) + f / k
    # the same with x . c_k / |c|^2 as coordinates (exact for orthogonal codes; same argmax as the cosine)
    for f in floor:
        out[f"dot-simplex {f:g}"] = (1 - f) * simplex(x @ codes.T / norm ** 2) + f / k
    return out


def save_cache(path, results):
    arrays = {}
    for key, (refs, raw) in results.items():
        prefix = "|".join(map(str, key)) + "|"
        arrays[prefix + "refs"] = refs
        arrays.update({prefix + name: np.asarray(value) for name, value in raw.items()})
    np.savez(path, **arrays)


def load_cache(path):
    """{(seed, fold, model, group[, calibration group]): (refs, raw outputs)} of save_cache."""
    results = {}
    with np.load(path, allow_pickle=False) as z:
        for name in z.files:
            seed, fold, model, *groups, field = name.split("|")
            key = (int(seed), fold, model, *map(int, groups))
            refs, raw = results.setdefault(key, (None, {}))
            if field == "refs":
                results[key] = (z[name], raw)
            else:
                raw[field] = float(z[name]) if field == "tau" else z[name]
    return results


def cached_run(path, jobs, n):
    """run_jobs(jobs) through the npz cache at ``path`` (read where it exists, else written)."""
    cache = Path(path) if path else None
    if cache and cache.exists():
        return load_cache(cache), True
    results = run_jobs(jobs, n, train_and_output)
    if cache:
        save_cache(cache, results)
    return results, False


def calibration_jobs(common, data, targets, seeds, outer, args):
    """The calibration models of every inner group's model, dealt as genser.trainer.calibrate_inner
    deals them (calibration_groups): label-balanced groups of the fit speakers; one held out
    (inner) or each (crossfit)."""
    jobs = []
    for seed in seeds:
        for fold in outer:
            for g, (fit, _) in enumerate(inner_splits(data, fold, args.inner, seed)):
                dealt = calibration_groups(fit, targets, data.spk, seed, args.calibration_groups)
                for j, held in enumerate(dealt if args.recipe_calibration == "crossfit" else dealt[:1]):
                    held = set(held)
                    jobs += [{**common, "key": (seed, fold, model, g, j), "model": model, "seed": seed,
                              "train_utts": [u for u in fit if data.spk[u] not in held],
                              "test_utts": [u for u in fit if data.spk[u] in held]}
                             for model in ("genser", "classifier")]
    return jobs


def held_out_scaled(per_group, objective):
    """Leave one inner group out: each group's posteriors scaled by the temperature fitted (by
    ``objective``) on the other groups. per_group: [(refs, probs)]. Returns (refs, scaled probs,
    temperatures)."""
    probs, refs, temps = [], [], []
    for g, (r, p) in enumerate(per_group):
        rest_p = np.concatenate([q for h, (_, q) in enumerate(per_group) if h != g])
        rest_r = np.concatenate([s for h, (s, _) in enumerate(per_group) if h != g])
        temps.append(fit_temperature(rest_p, rest_r, objective=objective))
        probs.append(temperature_scale(p, temps[-1]))
        refs.append(r)
    return np.concatenate(refs), np.concatenate(probs), temps


def recipe_scaled(main_outputs, calibration_outputs, objective):
    """Each inner group's posteriors scaled by the temperature fitted (by ``objective``) on its own
    calibration models' held-out posteriors. main_outputs: [(refs, probs)] per inner group;
    calibration_outputs: per inner group, [(refs, probs)] per calibration model."""
    probs, refs, temps = [], [], []
    for (r, p), calib in zip(main_outputs, calibration_outputs):
        temps.append(fit_temperature(np.concatenate([q for _, q in calib]), np.concatenate([s for s, _ in calib]),
                                     objective=objective))
        probs.append(temperature_scale(p, temps[-1]))
        refs.append(r)
    return np.concatenate(refs), np.concatenate(probs), temps


def held_out_accuracy(mapped, calibrated_by):
    """Lines giving each head's accuracy on its held-out clips, pooled: the inner models', and
    the calibration models' where there are any (weaker models fit a higher T, docs/METHOD.md §6).
    Both arguments as main() holds them: the maps of every model's outputs."""
    def accuracy(outputs):  # Gen-SER decides by the nearest code (cosine), as genser does
        return 100 * np.concatenate([maps.get("cosine", maps.get("softmax")).argmax(1) == refs
                                     for refs, maps in outputs]).mean()
    lines = []
    for model in ("genser", "classifier"):
        line = (f"Held-out accuracy, pooled: {model}: inner models "
                f"{accuracy(v for k, v in mapped.items() if k[2] == model):.1f} %")
        if calibrated_by:
            line += (f", their calibration models "
                     f"{accuracy(m for k, v in calibrated_by.items() if k[2] == model for m in v):.1f} %")
        lines.append(f"- {line}")
    return [*lines, ""]


def calibration_of(refs, probs):
    conf = probs.max(1)
    correct = probs.argmax(1) == refs
    return 100 * ece(conf, correct), nll(probs, refs), auroc(conf, correct)


def main(argv=None):
    args = get_parser().parse_args(argv)
    start = time.time()
    data, labels, feats, targets, outer = load_task(args)
    seeds = [int(s) for s in args.seeds.split()]
    common = {"feats": feats, "targets": targets, "labels": labels, "spk": dict(data.spk), "train": {},
              "model_conf": {}, "speed_perturb": False, "perturbed": [], "protocol": "clip"}
    jobs = [{**common, "key": (seed, fold, model, g), "model": model, "seed": seed, "train_utts": fit,
             "test_utts": val}
            for seed in seeds for fold in outer
            for g, (fit, val) in enumerate(inner_splits(data, fold, args.inner, seed))
            for model in ("genser", "classifier")]
    results, cached = cached_run(args.cache, jobs, args.jobs)
    calibration = {}
    if args.recipe_calibration != "none":
        calibration, _ = cached_run(args.calibration_cache,
                                    calibration_jobs(common, data, targets, seeds, outer, args),
                                    args.jobs)
    floors = [float(f) for f in args.floors.split()]
    # {key: (refs, {map name: posteriors at T = 1})}, every model's maps computed once
    mapped = {key: (refs, maps_of(raw, floors)) for key, (refs, raw) in results.items()}
    # {(seed, fold, model, inner group): [(refs, maps)] of its calibration models, in key order}
    calibrated_by = {}
    for key in sorted(calibration):
        refs, raw = calibration[key]
        calibrated_by.setdefault(key[:4], []).append((refs, maps_of(raw, floors)))
    rows = []
    for model in ("genser", "classifier"):
        names = mapped[seeds[0], outer[0], model, 0][1]
        for name, objective in ((n, o) for n in names for o in args.objectives.split()):
            per_seed, pooled, temps, ece_floors = [], ([], []), [], []
            for seed in seeds:
                ece_folds = []
                for f in outer:  # each outer fold's training speakers on their own
                    main_outputs = [(mapped[seed, f, model, g][0], mapped[seed, f, model, g][1][name])
                                    for g in range(args.inner)]
                    if calibrated_by:
                        refs, probs, t = recipe_scaled(main_outputs, [
                            [(r, maps[name]) for r, maps in calibrated_by[seed, f, model, g]]
                            for g in range(args.inner)], objective)
                    else:
                        refs, probs, t = held_out_scaled(main_outputs, objective)
                    ece_folds.append(calibration_of(refs, probs)[0])
                    ece_floors.append(100 * ece_floor(probs.max(1)))
                    pooled[0].append(refs)
                    pooled[1].append(probs)
                    temps += t
                per_seed.append(np.mean(ece_folds))
            ece_all, nll_all, auroc_all = calibration_of(np.concatenate(pooled[0]), np.concatenate(pooled[1]))
            cells = " / ".join(f"{e:.1f}" for e in per_seed)
            rows.append(f"| {model} | {name} | {objective} | {np.mean(per_seed):.2f} ({cells}) | "
                        f"{np.mean(ece_floors):.2f} | {ece_all:.2f} | "
                        f"{nll_all:.3f} | {auroc_all:.3f} | {np.median(temps):.2f} |")
    body = "\n".join([
        machine_description(),
        f"Seeds {args.seeds}; {len(outer)} outer folds, {args.inner} inner speaker groups each; "
        f"{'trained outputs read from --cache' if cached else f'{(time.time() - start) / 60:.1f} min'}. Held-out training speakers decoded under the clip protocol; "
        + (f"temperature as genser-train --calibrate {args.recipe_calibration} fits it: from calibration models "
           f"trained within each inner group's fit speakers" if calibrated_by else
           "temperature from the other inner groups (leave one group out)") + f", fitted by the named scoring rule. ECE over 15 bins, in two sizes: per "
        f"outer fold (its training speakers' held-out clips, about the size of a recipe's test table; mean, "
        f"and mean per seed; its floor: the mean ECE those folds' confidences would score if perfectly "
        f"calibrated, genser.calibration.ece_floor), and pooled over every outer fold and seed; NLL and the AUROC of the largest "
        f"posterior against correctness pooled. Model config: genser.config.DEFAULT_CONFIG, tm.ce_weight "
        f"{DEFAULT_CONFIG['tm']['ce_weight']}.", "", *held_out_accuracy(mapped, calibrated_by),
        "| model | map | T fitted by | ECE % per outer fold (per seed) | its floor | ECE % pooled | NLL | AUROC (max p) "
        "| median T |",
        "|---|---|---|---|---|---|---|---|---|", *rows])
    write_results(Path(args.out), title=f"Posterior maps under held-out temperature: {args.task}, {args.feat_dir}",
                  body=body, argv=sys.argv if argv is None else ["bench/calibration_maps.py", *argv])


if __name__ == "__main__":
    main()
