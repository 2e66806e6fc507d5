"""The calibration and confidence study of one experiment's decoded folds (docs/METHOD.md §6):
the RESULTS.md section that genser.bin.score appends and genser.bin.calibrate writes alone.

For each system at its main-table setting, pooled over the test folds: accuracy, expected
calibration error (ECE, 15 bins), Brier score, NLL and the AUROC of the largest posterior
against correctness; a reliability diagram (reliability_<system>.png). Temperature scaling is
fitted per fold on that fold's hyp_dev.tsv (the fold's dev speakers: training speakers that its
model did not train on, never the test speaker) and applied to the same model's test posteriors.
Where Gen-SER settings with eta > 0 have draws.tsv (genser-decode --draws K), the confidence
study ranks the errors of the deterministic decision by the largest posterior, the agreement of
the K draws, minus their spread and the largest mean posterior (AUROC, 0.5 = chance).
"""
import logging
from pathlib import Path

import numpy as np
import yaml

from genser.calibration import auroc, fit_temperature, reliability, summarize_calibration, temperature_scale
from genser.config import resolve_config
from genser.fileio import read_identity
from genser.report import md_table
from genser.scoring import ScoreError, parse_setting, primary_setting, read_hyp, setting_name

log = logging.getLogger("genser.calibration_study")

N_BINS = 15


def _arrays(exp, hyp):
    index = {label: i for i, label in enumerate(exp.labels)}
    order = [hyp.labels.index(label) for label in exp.labels]  # columns in the experiment's label order
    return np.asarray(hyp.scores, dtype=np.float64)[:, order], np.array([index[r] for r in hyp.refs])


def stored_temperature(fold_dir):
    """The temperature genser-train fitted and stored in a fold's model (its ``calibration`` file,
    first line "temperature T"), or None for a model trained with --calibrate none."""
    path = Path(fold_dir) / "calibration"
    if not path.is_file():
        return None
    head = path.read_text(encoding="utf-8").split()
    if len(head) < 2 or head[0] != "temperature":
        raise ScoreError(f"{path}: expected a first line 'temperature <T>'")
    return float(head[1])


def temperature_objective_of(system_dir):
    """The scoring rule a system's temperature is fitted by (its model config's posterior.fit),
    from its <exp>/<system>/config.yaml; NLL where there is none (an older experiment)."""
    path = Path(system_dir) / "config.yaml"
    if not path.is_file():
        return "nll"
    conf = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    return resolve_config(conf.get("model_conf") or {})["posterior"]["fit"]


def calibrate_system(exp, system, setting):
    """Pooled figures before and after per-fold temperature scaling, and the temperatures: the
    temperature each model holds (fitted by genser-train on held-out training speakers; its
    hyp.tsv posteriors are already scaled, so "before" undoes it), else one fitted on the fold's
    hyp_dev.tsv by the system's scoring rule."""
    probs, targets, scaled, temps = [], [], [], {}
    objective = None
    for fold in exp.folds_of(system, setting):
        hyp = exp.decodes[(system, setting, fold)]
        p, t = _arrays(exp, hyp)
        targets.append(t)
        dev_path = hyp.path.parent / "hyp_dev.tsv"
        stored = stored_temperature(hyp.path.parents[1])
        if stored is not None:
            temps[fold] = stored
            scaled.append(p)
            probs.append(temperature_scale(p, 1.0 / stored))
            continue
        probs.append(p)
        if dev_path.is_file():
            dev_model = read_identity(hyp.path.parent / "identity_dev")
            trained = read_identity(hyp.path.parents[1] / "train.done")
            if dev_model is not None and trained is not None and dev_model != trained:
                raise ScoreError(f"{dev_path} was decoded from model {dev_model}, but {hyp.path.parents[1]} holds "
                                 f"model {trained}: a stale decode; re-run genser-decode --subset dev")
            dp, dt = _arrays(exp, read_hyp(dev_path))
            objective = objective or temperature_objective_of(hyp.path.parents[2])  # the system's, read once
            temps[fold] = fit_temperature(dp, dt, objective=objective)
            scaled.append(temperature_scale(p, temps[fold]))
    probs, targets = np.concatenate(probs), np.concatenate(targets)
    out = {"before": summarize_calibration(probs, targets, N_BINS), "temps": temps,
           "bins": {"before": reliability(probs.max(1), probs.argmax(1) == targets, N_BINS)}}
    if temps and len(temps) == len(exp.folds_of(system, setting)):
        scaled = np.concatenate(scaled)
        out["after"] = summarize_calibration(scaled, targets, N_BINS)
        out["bins"]["after"] = reliability(scaled.max(1), scaled.argmax(1) == targets, N_BINS)
    return out


def read_draws(path):
    """{utt: (agreement, spread, mean_max)} of a draws.tsv and its number of draws."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    header = lines[0].split("\t")
    if header != ["utt", "ref", "vote", "agreement", "spread", "mean_max", "draws"]:
        raise ScoreError(f"{path}: unexpected header {header}")
    rows, draws = {}, set()
    for lineno, line in enumerate(lines[1:], 2):
        fields = line.split("\t")
        if len(fields) != 7:
            raise ScoreError(f"{path}:{lineno}: expected 7 fields, got {len(fields)}")
        rows[fields[0]] = (fields[1], fields[2], *map(float, fields[3:6]))
        draws.add(int(fields[6]))
    return rows, draws


def _pooled_draws(exp, system, setting, det):
    """Correctness of the eta-0 decision, the confidences and the vote's correctness, pooled."""
    conf = {"agreement": [], "-spread": [], "max mean posterior": []}
    correct, vote_correct, draws = [], [], set()
    for fold in exp.folds_of(system, setting):
        path = exp.decodes[(system, setting, fold)].path.parent / "draws.tsv"
        hyp = exp.decodes[(system, det, fold)]
        sampled, k = read_draws(path)
        draws |= k
        for utt, ref, pred in zip(hyp.utts, hyp.refs, hyp.hyps):
            if utt not in sampled:
                raise ScoreError(f"{path}: no draws for utterance {utt} of {hyp.path}")
            _, vote, agreement, spread, mean_max = sampled[utt]
            correct.append(pred == ref)
            vote_correct.append(vote == ref)
            conf["agreement"].append(agreement)
            conf["-spread"].append(-spread)
            conf["max mean posterior"].append(mean_max)
    return correct, conf, vote_correct, "/".join(map(str, sorted(draws)))


def _max_posterior_row(exp, system, setting, name="max posterior"):
    correct, conf = [], []
    for fold in exp.folds_of(system, setting):
        hyp = exp.decodes[(system, setting, fold)]
        correct += [p == r for p, r in zip(hyp.hyps, hyp.refs)]
        conf += [max(s) for s in hyp.scores]
    return {"system": system, "setting": setting, "confidence": name, "acc": float(np.mean(correct)),
            "auroc": auroc(conf, correct), "vote_acc": None}


def confidence_study(exp):
    """Rows of (system, setting, confidence, decision accuracy, AUROC, vote accuracy), pooled over
    folds. Gen-SER settings need nsteps >= 2 (at one step eta adds no noise, docs/METHOD.md §6)."""
    rows = []
    for system in exp.systems:
        for setting in exp.settings(system):
            parsed = parse_setting(setting)
            if parsed is None or parsed[1] == 0.0 or parsed[0] < 2:
                continue
            det = setting_name(parsed[0], 0.0)
            if det not in exp.settings(system) or not all(
                    (exp.decodes[(system, setting, f)].path.parent / "draws.tsv").is_file()
                    for f in exp.folds_of(system, setting)):
                continue
            if not any(r["setting"] == det for r in rows):
                rows.append(_max_posterior_row(exp, system, det, "max posterior (eta 0)"))
            correct, conf, vote_correct, k = _pooled_draws(exp, system, setting, det)
            rows += [{"system": system, "setting": f"{setting}, K={k}", "confidence": name,
                      "acc": float(np.mean(correct)), "auroc": auroc(values, correct),
                      "vote_acc": float(np.mean(vote_correct))} for name, values in conf.items()]
    if rows:
        rows += [_max_posterior_row(exp, s, primary_setting(exp.settings(s))) for s in exp.systems if s != "genser"]
    return rows


def _f(x, scale=100.0, digits=1):
    return "—" if x is None else f"{scale * x:.{digits}f}"


def calibration_section(exp, primaries, out_dir, level="##"):
    """Markdown lines of the calibration tables (and the PNGs they link, written to out_dir)."""
    from genser.plots import plot_reliability  # matplotlib only when plotting

    table, panels, notes = [], [], []
    for system in exp.systems:
        setting = primaries[system]
        res = calibrate_system(exp, system, setting)
        before, after = res["before"], res.get("after")
        if not after:  # say why the T columns are empty, and how to fill them
            folds = exp.folds_of(system, setting)
            notes.append(f"{system}: no temperature for {len(folds) - len(res['temps'])} of {len(folds)} folds: their "
                         f"models hold none (trained with --calibrate none, or before it existed) and they have no "
                         f"hyp_dev.tsv; retrain with --calibrate crossfit (genser-train's default) or decode a dev "
                         f"set (--dev_ratio > 0, genser-decode --subset dev)")
        temps = sorted(res["temps"].values())
        t_text = (f"{np.median(temps):.2f} [{temps[0]:.2f}, {temps[-1]:.2f}]" if after else "—")
        table.append([system, f"`{setting}`", str(before["n"]), _f(before["acc"]), _f(before["ece"]),
                      _f(before["brier"], 1, 3), _f(before["nll"], 1, 3), _f(before["auroc"], 1, 3), t_text,
                      _f(after and after["ece"]), _f(after and after["ece_floor"]), _f(after and after["brier"], 1, 3),
                      _f(after and after["nll"], 1, 3)])
        panels.append((f"{system} {setting}", res["bins"]["before"], before["ece"]))
        if after:
            panels.append((f"{system} {setting}, T={np.median(temps):.2f}", res["bins"]["after"], after["ece"]))
    png = "reliability.png"
    plot_reliability(panels, Path(out_dir) / png,
                     title="Reliability (pooled test folds; T fitted on held-out training speakers)")
    out = [f"{level} Calibration", "",
           f"Pooled over the test folds; ECE over {N_BINS} equal-width confidence bins (%), Brier score and NLL "
           "per utterance, AUROC of the largest posterior against correctness. T = the temperature of each "
           "fold's posteriors, fitted on training speakers only: by genser-train (--calibrate crossfit, the "
           "default: the training speakers are dealt into --calibrate_groups groups, 3 by default, a model "
           "trained without one group decodes it, each group in turn, and T minimises the NLL of their "
           "posteriors, or the scoring rule posterior.fit names; inner: one group only; the model holds T, so "
           "decode, genser-infer and the ONNX heads apply it), or, for models without one, on the fold's dev "
           "speakers (hyp_dev.tsv). Median [min, max] over folds; the columns before T are the unscaled "
           "posteriors (T = 1), the last four the scaled ones. ECE floor: the ECE that the scaled confidences "
           "would score if they were perfectly calibrated, on this many clips (its expectation when each clip "
           "is right with probability equal to its confidence); an ECE near it cannot be told from "
           "calibration here.", "",
           md_table(["system", "setting", "N", "acc", "ECE", "Brier", "NLL", "AUROC", "T", "ECE (T)",
                     "ECE floor", "Brier (T)", "NLL (T)"], table, left=2), "", *(f"- {n}" for n in notes), *([""] if notes else []),
           f"![reliability diagrams]({png})", ""]
    for note in notes:
        log.warning("%s", note)
    study = confidence_study(exp)
    if not study:
        out += ["No confidence study of stochastic draws: no Gen-SER setting with eta > 0 and nsteps >= 2 has "
                "draws.tsv (stage 4 with --eta \"0.0 0.5\" --nsteps \"1 3\" --decode_args \"--draws 8\").", ""]
    if study:
        out += [f"{level} Confidence: does it rank the errors?", "",
                "AUROC of each confidence against the correctness of the decision named (pooled over folds; "
                "0.5 = chance, 1 = every error less confident than every correct answer). Gen-SER: the "
                "decision of the deterministic sampler (eta 0) at the same nsteps, ranked by its largest "
                "posterior, or by K stochastic draws at eta > 0: the share of draws that agree with their "
                "vote, minus the RMS distance of the terminal samples to their mean (spread), the largest "
                "mean posterior. `vote acc` = accuracy of the draws' majority vote.", "",
                md_table(["system", "setting", "confidence", "acc", "AUROC", "vote acc"],
                         [[r["system"], f"`{r['setting']}`", r["confidence"], _f(r["acc"]), _f(r["auroc"], 1, 3),
                           _f(r["vote_acc"])] for r in study], left=3), ""]
    return out
