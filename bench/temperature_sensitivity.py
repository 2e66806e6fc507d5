#!/usr/bin/env python3
"""How far an experiment's stored temperatures are from the ones its test folds would want, and
how much a T that is off costs each head's ECE: a diagnosis, never a way to choose T.

    python bench/temperature_sensitivity.py --exp_dir egs/emodb/exp/<experiment> \
        --out bench/results/temperature_sensitivity_emodb_whisper.md

For every seed<S>/<system> of the experiment, each fold's decoded posteriors (hyp.tsv, already
scaled by the T its model holds) are scaled once more so that the fold's T is multiplied by one
factor f, the same for all folds, and then pooled over folds: ECE (15 bins) and NLL at each f,
and ECE's floor at f = 1 (genser.calibration.ece_floor: what the run's own confidences would
score if they were perfectly calibrated). Temperatures compose: softmax(log p / f) of the
posteriors p at temperature T are the posteriors at T f, for both heads' maps.
"""
import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import machine_description, write_results  # noqa: E402

from genser.calibration import ece, ece_floor, nll, temperature_scale  # noqa: E402
from genser.calibration_study import stored_temperature  # noqa: E402
from genser.scoring import read_hyp  # noqa: E402


def get_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--exp_dir", required=True, help="an experiment: seed<S>/<system>/fold_*/decode_*/hyp.tsv")
    p.add_argument("--factors", default="0.85 0.9 0.95 1 1.05 1.1")
    p.add_argument("--out", required=True)
    return p


def pooled(system_dir):
    """(probs [N, K], refs [N]) of a system's folds, each decoded once (one decode_* per fold),
    at the temperature its model holds."""
    probs, refs = [], []
    for fold in sorted(Path(system_dir).glob("fold_*")):
        decodes = sorted(fold.glob("decode_*/hyp.tsv"))
        if len(decodes) != 1:
            sys.exit(f"{fold}: expected one decode_*/hyp.tsv, found {len(decodes)}")
        if stored_temperature(fold) is None:
            sys.exit(f"{fold}: its model holds no temperature (trained with --calibrate none)")
        hyp = read_hyp(decodes[0])
        probs.append(np.asarray(hyp.scores, dtype=np.float64))
        refs.append(np.array([hyp.labels.index(r) for r in hyp.refs]))
    if not probs:
        sys.exit(f"{system_dir}: no fold_* directories")
    return np.concatenate(probs), np.concatenate(refs)


def main(argv=None):
    args = get_parser().parse_args(argv)
    factors = [float(f) for f in args.factors.split()]
    exp = Path(args.exp_dir)
    seeds = sorted(exp.glob("seed*"), key=lambda p: p.name)
    systems = sorted({d.name for s in seeds for d in s.iterdir() if d.is_dir() and any(d.glob("fold_*"))})
    rows = []
    for system in systems:
        per_seed = [pooled(seed / system) for seed in seeds if (seed / system).is_dir()]
        scaled = [[(temperature_scale(p, f), r) for f in factors] for p, r in per_seed]
        eces = np.array([[100 * ece(q.max(1), q.argmax(1) == r) for q, r in row] for row in scaled])
        nlls = np.array([[nll(q, r) for q, r in row] for row in scaled])
        floor = [100 * ece_floor(p.max(1)) for p, _ in per_seed]
        rows.append(f"| {system} | ECE % | " + " | ".join(
            f"{m:.1f} ({' / '.join(f'{e:.1f}' for e in col)})" for m, col in zip(eces.mean(0), eces.T))
            + f" | {np.mean(floor):.1f} ({' / '.join(f'{x:.1f}' for x in floor)}) |")
        rows.append(f"| {system} | NLL | " + " | ".join(f"{m:.3f}" for m in nlls.mean(0)) + " | |")
    body = "\n".join([
        machine_description(),
        f"Experiment `{exp}`, seeds {' '.join(s.name[4:] for s in seeds)}; each seed's folds pooled, then the "
        "mean over seeds (per seed in brackets). Columns: the factor f by which every fold's stored T is "
        "multiplied (f = 1: the posteriors as the models give them); the last column is ECE's floor at f = 1. "
        "Read on test folds: a diagnosis of the calibration the recipe chose, not a way to choose it.", "",
        "| system | measure | " + " | ".join(f"T x {f:g}" for f in factors) + " | ECE floor (T x 1) |",
        "|---|---|" + "---|" * (len(factors) + 1), *rows])
    write_results(Path(args.out), title=f"Temperature sensitivity: {exp.name}", body=body,
                  argv=sys.argv if argv is None else ["bench/temperature_sensitivity.py", *argv])


if __name__ == "__main__":
    main()
