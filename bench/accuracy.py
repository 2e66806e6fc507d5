#!/usr/bin/env python3
"""Accuracy benchmark: Gen-SER against the classifier on the same cached features, folds and seeds.

    python bench/accuracy.py --emodb ../shared/corpora/emodb --whisper ../shared/models/whisper-base \
        --seeds "0 1 2" --out bench/results/accuracy.md

EmoDB, leave-one-speaker-out (10 folds), emotion (7 classes) and gender. Features are extracted
once per frontend with utterance-mean pooling per layer (the representation of docs/METHOD.md §3.2's
logistic-regression floor), then every system is trained by genser.bin.train and decoded by
genser.bin.decode on every fold and seed, exactly as stage 3/4 of a recipe would, and scored by
genser.bin.score. On top of the main comparison it runs the ablations docs/METHOD.md §2 flags as
reconstructed (taxonomy code spacing/base, logistic steepness k, bridge sigma) for Gen-SER on
whisper-base emotion, and decodes every Gen-SER model at N in {1,2,3,5,10} x eta in {0, 0.5}.

Everything lands under --work (data, dumps, one exp dir per run); finished runs are skipped, so
an interrupted benchmark resumes where it stopped.
"""
import argparse
import itertools
import logging
import statistics
import sys
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import machine_description, prepare_emodb, quiet, whisper_spec, write_results  # noqa: E402

from genser.scoring import load_experiment, score_experiment  # noqa: E402

HERE = Path(__file__).resolve().parent
NSTEPS, ETAS = "1 2 3 5 10", "0.0 0.5"
METRICS = ("ua", "wa", "macro_f1")

# Ablations of the reconstructed choices (docs/METHOD.md §2), one knob at a time around the
# defaults: name -> model_conf override.
ABLATIONS = {
    "code g=1 base=1e4": {"taxonomy": {"spacing": 1.0, "base": 10000.0}},
    "code g=100 base=1e3": {"taxonomy": {"spacing": 100.0, "base": 1000.0}},
    "k=5": {"schedule": {"k": 5.0}},
    "k=20": {"schedule": {"k": 20.0}},
    "linear mean": {"schedule": {"mean": "linear"}},
    "sigma=0": {"schedule": {"sigma": 0.0}},
    "sigma=1": {"schedule": {"sigma": 1.0}},
    "no CE": {"tm": {"ce_weight": 0.0}},
}


def get_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--emodb", required=True, help="EmoDB root (wav/*.wav)")
    p.add_argument("--whisper", help="whisper-base transformers folder; without it only fbank runs")
    p.add_argument("--work", default="bench/work", help="data, dumps and experiments")
    p.add_argument("--config", default=str(HERE / "conf" / "probe.yaml"), help="training YAML")
    p.add_argument("--seeds", default="0 1 2")
    p.add_argument("--tasks", default="emotion gender")
    p.add_argument("--folds", default="all", help='test folds: "all" or a subset such as "03 08"')
    p.add_argument("--ablations", default="all", help='"all", "none", or names joined by ","')
    p.add_argument("--out", default="bench/results/accuracy.md")
    return p


def prepare(args, work):
    data = prepare_emodb(args.emodb, work)
    # s3prl's "fbank" applies per-utterance CMVN, which makes every utterance mean zero: the
    # pooled probe needs the variant without it.
    # pooling as the recipe's --feat_pooling auto: mean+std of fbank, the mean of each whisper layer
    frontends = {"fbank_no_cmvn": ["--frontend", "fbank_no_cmvn", "--pooling", "meanstd"]}
    if args.whisper:
        spec = work / "whisper_base.yaml"
        spec.write_text(yaml.safe_dump(whisper_spec(args.whisper)))
        frontends["whisper_base"] = ["--frontend_conf", str(spec), "--pooling", "mean"]
    for name, opts in frontends.items():
        dump = work / "dump" / name
        if not (dump / "feats.scp").exists():
            start = time.time()
            quiet("genser.bin.extract_feats", ["--data_dir", str(data), "--out_dir", str(dump), *opts],
                  work / "log" / f"extract_{name}.log")
            quiet("genser.bin.extract_feats", ["--merge", "--out_dir", str(dump), "--nj", "1", "--data_dir", str(data)],
                  work / "log" / f"extract_{name}.log")
            print(f"extracted {name}: {time.time() - start:.0f}s", flush=True)
    return data, list(frontends)


def run_experiment(*, args, data, dump, exp, task, seed, systems, model_conf):
    """Trains and decodes every fold for each system into exp/<system>/fold_<f>/; returns scores."""
    exp.mkdir(parents=True, exist_ok=True)
    if not (exp / "folds.txt").exists():
        quiet("genser.bin.make_labels", ["--data_dir", str(data), "--task", task, "--folds", args.folds,
                                 "--out_dir", str(exp)], exp / "bench.log")
    folds = (exp / "folds.txt").read_text().split()
    for system, fold in itertools.product(systems, folds):
        fold_dir = exp / system / f"fold_{fold}"
        common = ["--feat_dir", str(dump), "--data_dir", str(data), "--task", task, "--seed", str(seed)]
        if not (fold_dir / "train.done").exists():
            # UA does not depend on the posteriors' temperature, so no calibration models
            # (genser-train's default cross-fits: three more trainings per fold and system)
            quiet("genser.bin.train", ["--config", args.config, "--model", system, "--labels", str(exp / "labels.txt"),
                               "--fold", fold, "--exp_dir", str(exp / system), "--model_conf",
                               yaml.safe_dump(model_conf), "--calibrate", "none", *common], exp / "bench.log")
        if not any(fold_dir.glob("decode_*/hyp.tsv")):
            quiet("genser.bin.decode", ["--model_dir", str(fold_dir), "--nsteps", NSTEPS, "--eta", ETAS, *common],
                  exp / "bench.log")
    scores, _ = score_experiment(load_experiment(exp))
    logging.getLogger().handlers.clear()
    return scores


def summarize_seeds(per_seed):
    """per_seed: [score_setting(...)] over seeds -> mean and std over all (seed, fold) pairs,
    std of the per-seed fold means, and the mean of the pooled figures."""
    out = {}
    for m in METRICS:
        fold_values = [f[m] for s in per_seed for f in s["folds"].values()]
        seed_means = [s["mean"][m] for s in per_seed]
        out[m] = {"mean": statistics.fmean(fold_values), "fold_std": statistics.stdev(fold_values),
                  "seed_std": statistics.stdev(seed_means) if len(seed_means) > 1 else 0.0,
                  "pooled": statistics.fmean(s["pooled"][m] for s in per_seed)}
    return out


def cell(stat):
    return f"{100 * stat['mean']:.1f} ± {100 * stat['fold_std']:.1f} ({100 * stat['seed_std']:.1f})"


def main(argv=None):
    args = get_parser().parse_args(argv)
    unknown = set(args.ablations.split(",")) - {"all", "none", *ABLATIONS}
    if unknown:
        raise SystemExit(f"error: unknown ablation(s) {sorted(unknown)}; known: {', '.join(ABLATIONS)}")
    work = Path(args.work)
    seeds = [int(s) for s in args.seeds.split()]
    data, frontends = prepare(args, work)
    results = {}  # (frontend, task, variant, system, setting) -> [score per seed]
    runs = [(fe, task, "default", {}) for fe in frontends for task in args.tasks.split()]
    if args.ablations != "none" and "whisper_base" in frontends and "emotion" in args.tasks.split():
        names = list(ABLATIONS) if args.ablations == "all" else args.ablations.split(",")
        runs += [("whisper_base", "emotion", name, ABLATIONS[name]) for name in names]
    for (frontend, task, variant, conf), seed in itertools.product(runs, seeds):
        start = time.time()
        tag = variant.replace(" ", "_").replace("=", "")
        exp = work / "exp" / f"{task}_{frontend}" / f"{tag}_seed{seed}"
        systems = ["genser", "classifier"] if variant == "default" else ["genser"]
        scores = run_experiment(args=args, data=data, dump=work / "dump" / frontend, exp=exp, task=task,
                                seed=seed, systems=systems, model_conf=conf)
        for (system, setting), score in scores.items():
            results.setdefault((frontend, task, variant, system, setting), []).append(score)
        headline = {s: 100 * scores[(s, "nsteps1_eta0.0" if s == "genser" else "argmax")]["mean"]["ua"]
                    for s in systems}
        print(f"{frontend} {task} {variant} seed {seed}: UA " +
              " ".join(f"{s} {v:.1f}" for s, v in headline.items()) + f" [{time.time() - start:.0f}s]", flush=True)
    write_results(Path(args.out), title="Accuracy: Gen-SER vs the classifier on EmoDB (LOSO)",
                  body=render(results, seeds, args), argv=sys.argv)


def render(results, seeds, args):
    conf = Path(args.config).read_text()
    # Named from the repository root when it is inside, so that the report holds no machine path.
    config = Path(args.config).resolve()
    config = config.relative_to(HERE.parent) if config.is_relative_to(HERE.parent) else config
    lines = [machine_description(), "",
             f"EmoDB leave-one-speaker-out, {len(seeds)} seeds ({' '.join(map(str, seeds))}). Cells: mean over "
             "every (seed, fold) ± std over folds (std of the seed means in brackets); 'pooled' scores all "
             "folds' predictions together, averaged over seeds (the protocol of the LR floor, docs/METHOD.md §3.2).",
             "", f"Training configuration ({config}):", "", "```yaml", conf.strip(), "```", ""]
    summary = {key: summarize_seeds(v) for key, v in results.items()}
    lines += ["## Gen-SER (N=1, eta=0) vs the classifier", "",
              "| frontend | task | system | UA | WA | macro-F1 | pooled UA |", "|---|---|---|---|---|---|---|"]
    for key, s in summary.items():
        frontend, task, variant, system, setting = key
        if variant == "default" and setting in ("nsteps1_eta0.0", "argmax"):
            lines.append(f"| {frontend} | {task} | {system} | {cell(s['ua'])} | {cell(s['wa'])} | "
                         f"{cell(s['macro_f1'])} | {100 * s['ua']['pooled']:.1f} |")
    lines += ["", "## Steps ablation (Gen-SER, UA: mean over seeds and folds)", ""]
    settings = sorted({k[4] for k in summary if k[3] == "genser"},
                      key=lambda st: (int(st[6:st.index("_")]), st))
    lines += ["| frontend | task | " + " | ".join(settings) + " |", "|---|---|" + "---|" * len(settings)]
    for frontend, task in sorted({(k[0], k[1]) for k in summary if k[2] == "default"}):
        row = [f"{100 * summary[(frontend, task, 'default', 'genser', st)]['ua']['mean']:.1f}" for st in settings]
        lines.append(f"| {frontend} | {task} | " + " | ".join(row) + " |")
    variants = [v for v in dict.fromkeys(k[2] for k in summary) if v != "default"]
    if variants:
        lines += ["", "## Ablations (Gen-SER, whisper-base, emotion; N=1 and N=3, eta=0)", "",
                  "| variant | UA N=1 | UA N=3 | pooled UA N=1 |", "|---|---|---|---|"]
        for v in ["default", *variants]:
            one = summary[("whisper_base", "emotion", v, "genser", "nsteps1_eta0.0")]["ua"]
            three = summary[("whisper_base", "emotion", v, "genser", "nsteps3_eta0.0")]["ua"]
            lines.append(f"| {v} | {cell(one)} | {cell(three)} | {100 * one['pooled']:.1f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
