"""The Markdown report of a scored experiment (RESULTS.md), its tables, PNGs and host line.

RESULTS.md gets UA / WA / macro-F1 / weighted-F1 per fold, their mean +- sample std over folds and
the pooled figures (all folds' predictions scored together), Gen-SER and the classifier side by
side, the steps ablation (every nsteps/eta setting), and links to the PNGs written next to it:
confusion_<system>_<setting>.png (pooled, primary setting) and steps_ablation.png.
The scores come from genser.scoring.
"""
import datetime
import importlib.metadata
import os
import platform
import statistics
from pathlib import Path

import numpy as np

from genser.scoring import METRICS, parse_setting
from genser.stats import sign_test, wilcoxon_signed_rank

METRIC_NAMES = {"ua": "UA", "wa": "WA", "macro_f1": "macro-F1", "weighted_f1": "weighted-F1"}


def pct(x):
    """A fraction as a percentage with one decimal; "-" when undefined."""
    return "-" if x is None else f"{100 * x:.1f}"


def mean_std(result, metric):
    """"71.3 ± 2.1" (mean ± sample std over folds, in %); just the mean with one fold."""
    mean, std = result["mean"][metric], result["std"][metric]
    return pct(mean) if std is None else f"{pct(mean)} ± {pct(std)}"


def mean_std_of(values):
    """"71.3 ± 2.1" over a list of fractions (mean ± sample std, in %); the value alone for one,
    "-" for none (seeds, or experiments, rather than folds)."""
    if not values:
        return "-"
    if len(values) == 1:
        return pct(values[0])
    return f"{pct(statistics.fmean(values))} ± {pct(statistics.stdev(values))}"


def md_table(header, rows, left=1):
    """A Markdown table; the first ``left`` columns are left-aligned, the rest right-aligned."""
    align = ["---"] * left + ["---:"] * (len(header) - left)
    lines = [header, align, *rows]
    return "\n".join("| " + " | ".join(str(c) for c in line) + " |" for line in lines)


def main_table(exp, scores, primaries):
    """One row per system at its primary setting: mean ± std over folds and pooled figures."""
    header = ["System", "Setting", *(METRIC_NAMES[m] for m in METRICS),
              "pooled UA", "pooled WA", "pooled macro-F1", "folds", "utts"]
    rows = []
    for system in exp.systems:
        r = scores[(system, primaries[system])]
        rows.append([system, primaries[system], *(mean_std(r, m) for m in METRICS),
                     pct(r["pooled"]["ua"]), pct(r["pooled"]["wa"]), pct(r["pooled"]["macro_f1"]),
                     len(r["folds"]), r["pooled"]["n"]])
    return md_table(header, rows, left=2)


def fold_table(exp, scores, primaries, degenerate=()):
    """Fold x system (primary settings): UA, WA, macro-F1, weighted-F1 and the test set size;
    the folds in ``degenerate`` (stage 2's degenerate_folds.txt) are marked with a dagger."""
    header = ["Fold", "utts"] + [f"{s} {METRIC_NAMES[m]}" for s in exp.systems for m in METRICS]
    rows = []
    for fold in exp.folds:
        cells, sizes = [], []
        for system in exp.systems:
            summary = scores[(system, primaries[system])]["folds"].get(fold)
            cells += [pct(summary[m]) if summary else "-" for m in METRICS]
            if summary and summary["n"] not in sizes:
                sizes.append(summary["n"])
        rows.append([fold + (" †" if fold in degenerate else ""), "/".join(str(n) for n in sizes), *cells])
    return md_table(header, rows, left=1)


def ablation_rows(exp, scores, primaries):
    """Plot/table rows: every nsteps/eta setting, then the other systems as references."""
    rows = []
    for system in exp.systems:
        for setting in exp.settings(system):
            parsed = parse_setting(setting)
            reference = not any(parse_setting(s) for s in exp.settings(system))
            if parsed or (reference and setting == primaries[system]):
                r = scores[(system, setting)]
                rows.append({"system": system, "setting": setting, "nsteps": parsed[0] if parsed else None,
                             "eta": parsed[1] if parsed else None, "ua": r["mean"]["ua"],
                             "ua_std": r["std"]["ua"], "result": r,
                             "primary": parsed is not None and setting == primaries[system]})
    return rows


def ablation_table(rows):
    header = ["System", "Setting", "nsteps", "eta", "UA", "WA", "macro-F1",
              "pooled UA", "pooled WA", "pooled macro-F1", "folds"]
    lines = []
    for row in rows:
        r = row["result"]
        setting = f"{row['setting']} *" if row["primary"] else (
            row["setting"] if row["nsteps"] is not None else f"{row['setting']} (reference)")
        lines.append([row["system"], setting, "-" if row["nsteps"] is None else row["nsteps"],
                      "-" if row["eta"] is None else row["eta"],
                      *(mean_std(r, m) for m in ("ua", "wa", "macro_f1")),
                      pct(r["pooled"]["ua"]), pct(r["pooled"]["wa"]), pct(r["pooled"]["macro_f1"]),
                      len(r["folds"])])
    return md_table(header, lines, left=2)


def write_plots(exp, scores, primaries, out_dir):
    """Pooled confusion PNG per system (primary setting) and, with several nsteps/eta settings,
    the steps-ablation PNG; returns {name: description} of the files written."""
    from genser.plots import plot_confusion, plot_steps_ablation  # matplotlib only when plotting

    pngs = {}
    for system in exp.systems:
        setting = primaries[system]
        r = scores[(system, setting)]
        name = f"confusion_{system}_{setting}.png"
        plot_confusion(r["cm"], exp.labels, Path(out_dir) / name,
                       title=f"{system} {setting} (pooled, {len(r['folds'])} folds, {r['pooled']['n']} utts)")
        pngs[name] = f"{system} {setting}, pooled confusion matrix"
    rows = ablation_rows(exp, scores, primaries)
    if sum(row["nsteps"] is not None for row in rows) > 1:
        plot_steps_ablation(rows, Path(out_dir) / "steps_ablation.png",
                            title=f"Steps ablation: {exp.exp_dir.resolve().name} (mean ± std over folds)")
        pngs["steps_ablation.png"] = "steps ablation: UA vs nsteps"
    return pngs


def environment():
    """Python, library versions and the host CPU, for the report header."""
    def version(dist):
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            return "not installed"

    return (f"python {platform.python_version()}, numpy {np.__version__}, torch {version('torch')}, "
            f"genser {version('genser')}; {platform.system()} {platform.release()} {platform.machine()}, "
            f"CPU: {_cpu_name()} ({os.cpu_count()} logical cores)")


def _cpu_name():
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def protocol_description(protocol):
    """What statistics of the test speaker a protocol uses, in a paper's words (genser/cmvn.py)."""
    if protocol == "clip":
        return ("clip (inductive): no statistics of the test speaker; each test clip is normalised alone "
                "against the training moments, as genser-infer does on one file")
    if protocol == "speaker-all":
        return ("speaker-all (transductive): each test clip is normalised with the moments of all unlabelled "
                "clips of its speaker")
    k = protocol.split("-", 1)[1]
    return (f"{protocol}: each test clip is normalised with the moments of {k} unlabelled clips of its speaker "
            f"(the clip and {int(k) - 1} others drawn at random)")


def fold_norms(exp_dir, systems, folds):
    """{fold: 'speaker' | 'none' | '?'} from each fold's feat_norm file (genser-train), over systems."""
    out = {}
    for fold in folds:
        kinds = set()
        for system in systems:
            path = Path(exp_dir) / system / f"fold_{fold}" / "feat_norm"
            kinds.add(path.read_text().split()[0] if path.is_file() else "?")
        out[fold] = "/".join(sorted(kinds))
    return out


def protocol_table(per_protocol):
    """Systems (primary settings) x protocols: UA mean ± std over folds, and pooled UA."""
    protocols = list(per_protocol)
    exp0, _, prim0 = per_protocol[protocols[0]]
    header = ["System", "Setting", *(f"{p} UA" for p in protocols), *(f"{p} pooled UA" for p in protocols)]
    rows = []
    for system in exp0.systems:
        cells = [mean_std(per_protocol[p][1][(system, prim0[system])], "ua") for p in protocols]
        pooled = [pct(per_protocol[p][1][(system, prim0[system])]["pooled"]["ua"]) for p in protocols]
        rows.append([system, prim0[system], *cells, *pooled])
    return md_table(header, rows, left=2)


def protocol_section(per_protocol, exp_dir):
    """The RESULTS.md section that sets the protocols side by side, with each fold's normalisation."""
    exp0 = next(iter(per_protocol.values()))[0]
    norms = fold_norms(exp_dir, exp0.systems, exp0.folds)
    lines = ["## Evaluation protocols", "",
             "The same models decoded under each protocol: which statistics of the test speaker the "
             "normalisation of a test clip used (no label is ever used). The clip figure is the headline: "
             "what a user gets on one file, and the one comparable with published speaker-independent "
             "results.", ""]
    lines += [f"- {protocol_description(p)}" for p in per_protocol]
    lines += ["", "Per-fold normalisation inside the model (genser-train --feat_norm): "
              + ", ".join(f"{f}: {k}" for f, k in norms.items())
              + ". A fold without normalisation decides alike under every protocol.", "",
              protocol_table(per_protocol), ""]
    return lines


def render_results(exp, scores, primaries, *, title, command, pngs, degenerate=None):
    """The whole RESULTS.md text."""
    date = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M:%S %Z")
    out = [f"# {title}", "",
           f"- date: {date}",
           f"- command: `{command}`",
           f"- environment: {environment()}",
           f"- experiment: `{exp.exp_dir}`; labels ({len(exp.labels)}): {', '.join(exp.labels)}; "
           f"folds ({len(exp.folds)}): {', '.join(exp.folds)}",
           f"- protocol of the tables below: {protocol_description(exp.protocol)}", "",
           "Metrics in %. UA = unweighted accuracy (mean per-class recall), WA = weighted accuracy "
           "(plain accuracy), macro-F1 over the classes seen in ref or hyp, weighted-F1 weighted by "
           "reference support. `mean ± std` = mean and sample standard deviation over folds; "
           "pooled = the predictions of all folds scored together.", ""]
    out += [f"> **warning**: {w}" + "  " for w in exp.warnings] + ([""] if exp.warnings else [])
    out += ["## Main results", "", main_table(exp, scores, primaries), ""]
    out += [f"> **note**: degenerate fold {fold} † is in these means (--allow_degenerate_folds): {why}" + "  "
            for fold, why in degenerate.items()] + ([""] if degenerate else [])
    out += ["## Per fold", "", "Systems at their main-table setting: "
            + ", ".join(f"{s} `{primaries[s]}`" for s in exp.systems) + ".", "",
            fold_table(exp, scores, primaries, degenerate), ""]
    rows = ablation_rows(exp, scores, primaries)
    if any(row["nsteps"] is not None for row in rows):
        out += ["## Steps ablation", "", ablation_table(rows), "",
                "`*` = the setting of the main table; reference rows are systems without sampling steps.", ""]
        if "steps_ablation.png" in pngs:
            out += ["![steps ablation](steps_ablation.png)", ""]
    out += ["## Confusion matrices (pooled over folds)", ""]
    for name, desc in pngs.items():
        if name.startswith("confusion_"):
            out += [f"![{desc}]({name})", ""]
    return "\n".join(out) + "\n"


# ----------------------------------------------------------------------------------------------
# Over seeds (genser.bin.score_seeds): per_seed is {seed: (experiment, scores, primaries)}

SEED_METRICS = ("ua", "wa", "macro_f1")


def pair_differences(per_seed, a, b, metric):
    """[(seed, fold, a - b)] over the (fold, seed) pairs both systems have."""
    out = []
    for seed, (exp, scores, primaries) in per_seed.items():
        sa, sb = scores[a, primaries[a]]["folds"], scores[b, primaries[b]]["folds"]
        out += [(seed, f, sa[f][metric] - sb[f][metric]) for f in exp.folds if f in sa and f in sb]
    return out


def seed_table(per_seed, systems, probe=None):
    """Systems over seeds; ``probe`` (one protocol's entry of probe.yaml) adds its row (no seeds)."""
    header = ["System", "Setting", *(f"{METRIC_NAMES[m]} (seeds)" for m in SEED_METRICS), "pooled UA (seeds)",
              *(f"UA seed {s}" for s in per_seed)]
    rows = []
    for system in systems:
        primary = {s: prim[system] for s, (_, _, prim) in per_seed.items()}
        means = {m: [sc[system, primary[s]]["mean"][m] for s, (_, sc, _) in per_seed.items()] for m in SEED_METRICS}
        pooled = [sc[system, primary[s]]["pooled"]["ua"] for s, (_, sc, _) in per_seed.items()]
        cells = [mean_std_of(means[m]) for m in SEED_METRICS]
        rows.append([system, "/".join(sorted(set(primary.values()))), *cells, mean_std_of(pooled),
                     *(pct(v) for v in means["ua"])])
    if probe:
        rows.append(["LR probe", "same features and folds", f"{probe['mean_ua']:.1f}", "-", "-",
                     f"{probe['pooled']['ua']:.1f}", *("-" for _ in per_seed)])
    return md_table(header, rows, left=2)


def summary_table(per_protocol, systems, probe=None):
    """Systems x protocols: UA over folds, mean ± std over seeds (the headline table)."""
    header = ["System", *(f"{q} UA" for q in per_protocol)]
    rows = []
    for system in systems:
        cells = []
        for per_seed in per_protocol.values():
            cells.append(mean_std_of([sc[system, prim[system]]["mean"]["ua"] for _, sc, prim in per_seed.values()]))
        rows.append([system, *cells])
    if probe:
        rows.append(["LR probe", *(f"{probe['protocols'][q]['mean_ua']:.1f}" if q in probe["protocols"] else "-"
                                   for q in per_protocol)])
    return md_table(header, rows, left=1)


def paired_table(per_seed, a, b):
    header = ["Metric", f"mean {a} − {b}", "wins / losses / ties", "sign test p", "Wilcoxon p", "pairs"]
    rows = []
    for metric in SEED_METRICS:
        diffs = [d for _, _, d in pair_differences(per_seed, a, b, metric)]
        wins, losses, p_sign = sign_test(diffs)
        _, p_wil = wilcoxon_signed_rank(diffs)
        rows.append([METRIC_NAMES[metric], f"{100 * statistics.fmean(diffs):+.2f}",
                     f"{wins} / {losses} / {len(diffs) - wins - losses}", f"{p_sign:.3g}", f"{p_wil:.3g}",
                     str(len(diffs))])
    return md_table(header, rows, left=1)
