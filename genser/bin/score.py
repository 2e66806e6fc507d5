"""Score the decoded folds of one experiment into RESULTS.md (stage 5).

    python -m genser.bin.score --exp_dir exp/emotion_fbank [--out exp/emotion_fbank/RESULTS.md]

Reads every <exp_dir>/<system>/fold_<f>/decode_<setting>/hyp.tsv written by stage 4
(genser.bin.decode): <system> is the model kind (genser, classifier, ...), <setting> is
nsteps<N>_eta<E> for Gen-SER and argmax for the classifier.  hyp.tsv has the header
"utt ref hyp <label1> <label2> ..." (tab separated; the label columns hold posteriors).

RESULTS.md gets UA / WA / macro-F1 / weighted-F1 per fold, their mean +- sample std over folds and
the pooled figures (all folds' predictions scored together), Gen-SER and the classifier side by
side, the steps ablation (every nsteps/eta setting), and links to the PNGs written next to it:
confusion_<system>_<setting>.png (pooled, primary setting) and steps_ablation.png.
"""
import argparse
import datetime
import importlib.metadata
import logging
import math
import os
import platform
import re
import shlex
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from genser.bin.common import load_config, setup_logging, str_or_none
from genser.fileio import atomic_write, read_identity
from genser.metrics import confusion_matrix, summarize_confusion

log = logging.getLogger("genser.score")

METRICS = ("ua", "wa", "macro_f1", "weighted_f1")
METRIC_NAMES = {"ua": "UA", "wa": "WA", "macro_f1": "macro-F1", "weighted_f1": "weighted-F1"}
SYSTEM_ORDER = ("genser", "classifier")  # then any other system, alphabetically
SETTING_RE = re.compile(r"^nsteps(\d+)_eta(.+)$")


class ScoreError(ValueError):
    """Bad or missing decoding output; the message names the file (and utterance)."""


def get_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", type=str_or_none, default=None, help="YAML file with any option below")
    p.add_argument("--exp_dir", required=True, help="experiment directory (exp/<name>) holding stage-4 output")
    p.add_argument("--out", type=str_or_none, default=None, help="Markdown report (default: <exp_dir>/RESULTS.md); "
                   "PNGs are written next to it")
    p.add_argument("--title", type=str_or_none, default=None, help="report title (default: the exp_dir name)")
    p.add_argument("--primary", type=str_or_none, default=None,
                   help="decoding setting shown in the main table for systems that have it, e.g. nsteps1_eta0.0 "
                   "(default: the smallest nsteps with eta 0)")
    return p


# ----------------------------------------------------------------------------------------------
# Reading hyp.tsv files


@dataclass
class Hyp:
    """One decoding output: reference and hypothesis label and posteriors per utterance (file order)."""

    path: Path
    labels: list
    utts: list = field(default_factory=list)
    refs: list = field(default_factory=list)
    hyps: list = field(default_factory=list)
    scores: list = field(default_factory=list)


def read_hyp(path):
    """Parses and validates one hyp.tsv (header, labels, refs present, no duplicate utts)."""
    path = Path(path)
    try:
        with open(path, encoding="utf-8") as f:
            lines = [line.rstrip("\r\n") for line in f]
    except UnicodeDecodeError as e:
        raise ScoreError(f"{path}: not UTF-8 text ({e})") from e
    header = lines[0].split("\t") if lines else []
    if header[:3] != ["utt", "ref", "hyp"] or len(header) < 4:
        raise ScoreError(f"{path}: expected the header 'utt<TAB>ref<TAB>hyp<TAB><label1>...', got {header!r}")
    labels = header[3:]
    if len(set(labels)) != len(labels) or "" in labels:
        raise ScoreError(f"{path}: empty or duplicate label columns in the header: {labels}")
    hyp, first_line = Hyp(path=path, labels=labels), {}
    for lineno, line in enumerate(lines[1:], 2):
        if not line.strip():
            continue
        utt, ref, pred, *scores = line.split("\t")
        where = f"{path}:{lineno}: utterance {utt!r}"
        if len(scores) != len(labels) or not utt:
            raise ScoreError(f"{where}: expected {len(header)} tab-separated fields, got {3 + len(scores)}")
        if utt in first_line:
            raise ScoreError(f"{where}: duplicate utterance id (first on line {first_line[utt]})")
        if not ref:
            raise ScoreError(f"{where}: no reference label")
        for kind, value in (("reference", ref), ("hypothesis", pred)):
            if value not in labels:
                raise ScoreError(f"{where}: {kind} label {value!r} is not one of {labels}")
        if not all(_is_finite_number(s) for s in scores):
            raise ScoreError(f"{where}: scores must be finite numbers, got {scores}")
        first_line[utt] = lineno
        hyp.utts.append(utt)
        hyp.refs.append(ref)
        hyp.hyps.append(pred)
        hyp.scores.append([float(x) for x in scores])
    if not hyp.utts:
        raise ScoreError(f"{path}: no utterances (only a header)")
    return hyp


def _is_finite_number(text):
    try:
        return math.isfinite(float(text))
    except ValueError:
        return False


# ----------------------------------------------------------------------------------------------
# The experiment: every decoding output, cross-checked


@dataclass
class Experiment:
    """All hyp.tsv of one exp_dir, keyed by (system, setting, fold)."""

    exp_dir: Path
    labels: list
    decodes: dict
    warnings: list

    @property
    def systems(self):
        found = {s for s, _, _ in self.decodes}
        return [s for s in SYSTEM_ORDER if s in found] + sorted(found - set(SYSTEM_ORDER))

    @property
    def folds(self):
        return sorted({f for _, _, f in self.decodes}, key=fold_key)

    def settings(self, system):
        return sorted({st for s, st, _ in self.decodes if s == system}, key=setting_key)

    def folds_of(self, system, setting):
        return sorted((f for s, st, f in self.decodes if (s, st) == (system, setting)), key=fold_key)


def fold_key(fold):
    """Folds sort numerically when they are numbers ("2" before "10"), else by name."""
    return (0, int(fold), fold) if fold.isdigit() else (1, 0, fold)


def parse_setting(setting):
    """"nsteps3_eta0.5" -> (3, 0.5); any other setting name (e.g. "argmax") -> None."""
    m = SETTING_RE.match(setting)
    if not m:
        return None
    try:
        return int(m.group(1)), float(m.group(2))
    except ValueError:
        return None


def setting_key(setting):
    parsed = parse_setting(setting)
    return (0, *parsed, "") if parsed else (1, 0, 0.0, setting)


def find_hyps(exp_dir):
    """{(system, setting, fold): path} for every <system>/fold_<f>/decode_<setting>/hyp.tsv."""
    exp_dir = Path(exp_dir)
    if not exp_dir.is_dir():
        raise ScoreError(f"experiment directory {exp_dir} does not exist; stage 3 (training) and "
                         f"stage 4 (decoding) create it")
    found = {}
    for path in sorted(exp_dir.glob("*/fold_*/decode_*/hyp.tsv")):
        system, fold_dir, decode_dir = path.parts[-4:-1]
        found[(system, decode_dir[len("decode_"):], fold_dir[len("fold_"):])] = path
    if not found:
        raise ScoreError(f"no {exp_dir}/<system>/fold_<f>/decode_<setting>/hyp.tsv found; "
                         f"they are produced by stage 4 (decoding)")
    return found


def load_experiment(exp_dir):
    """Reads every hyp.tsv and checks they agree: same label set, same ref per utterance,
    no utterance in two folds.  Missing folds and differing test sets become warnings."""
    found = find_hyps(exp_dir)
    _check_listed_folds(exp_dir, found)
    _check_decode_identity(found)
    decodes = {key: read_hyp(path) for key, path in found.items()}
    first = next(iter(decodes.values()))
    for hyp in decodes.values():
        if set(hyp.labels) != set(first.labels):
            raise ScoreError(f"label set of {hyp.path} ({', '.join(hyp.labels)}) differs from that of "
                             f"{first.path} ({', '.join(first.labels)})")
    _check_refs(decodes)
    exp = Experiment(exp_dir=Path(exp_dir), labels=list(first.labels), decodes=decodes, warnings=[])
    exp.warnings.extend(_missing_fold_warnings(exp))
    exp.warnings.extend(_test_set_warnings(exp))
    for warning in exp.warnings:
        log.warning(warning)
    return exp


def _check_listed_folds(exp_dir, found):
    """Every fold of <exp_dir>/folds.txt (stage 2; for a seed<S> dir of the recipe, its parent's)
    must have a hyp.tsv for each system and setting decoded: a fold that failed or was never
    decoded would otherwise vanish from the mean."""
    folds_txt = Path(exp_dir) / "folds.txt"
    if not folds_txt.is_file() and Path(exp_dir).name.startswith("seed"):
        folds_txt = Path(exp_dir).parent / "folds.txt"
    if not folds_txt.is_file():
        return  # no fold list (a hand-made exp dir): missing folds stay warnings
    listed = folds_txt.read_text(encoding="utf-8").split()
    for system, setting in sorted({(s, st) for s, st, _ in found}):
        for fold in listed:
            if (system, setting, fold) not in found:
                missing = Path(exp_dir) / system / f"fold_{fold}" / f"decode_{setting}" / "hyp.tsv"
                raise ScoreError(f"fold {fold} is listed in {folds_txt} but {missing} is missing; decode it "
                                 f"(stage 4) or remove the fold from the list")


def _check_decode_identity(found):
    """A hyp.tsv must come from the model its fold holds now: decoding copies the model's identity
    next to it, training writes it into train.done. A stale decode is refused, never scored."""
    for path in found.values():
        decoded = read_identity(path.parent / "identity")
        trained = read_identity(path.parents[1] / "train.done")
        if decoded is not None and trained is not None and decoded != trained:
            raise ScoreError(f"{path} was decoded from model {decoded}, but {path.parents[1] / 'train.done'} holds "
                             f"model {trained}: a stale decode; re-run stage 4")


def _check_refs(decodes):
    """One reference per utterance everywhere; a (system, setting) never has an utt in two folds."""
    ref_seen, fold_seen = {}, {}
    for (system, setting, fold), hyp in decodes.items():
        for utt, ref in zip(hyp.utts, hyp.refs):
            old_ref, old_path = ref_seen.setdefault(utt, (ref, hyp.path))
            if old_ref != ref:
                raise ScoreError(f"utterance {utt!r} has reference {ref!r} in {hyp.path} but {old_ref!r} "
                                 f"in {old_path}")
            old_fold, old_path = fold_seen.setdefault((system, setting, utt), (fold, hyp.path))
            if old_fold != fold:
                raise ScoreError(f"utterance {utt!r} is in the test set of two folds: {old_path} and "
                                 f"{hyp.path}; pooled scores would count it twice")


def _missing_fold_warnings(exp):
    warnings = []
    for system in exp.systems:
        for setting in exp.settings(system):
            missing = [f for f in exp.folds if f not in exp.folds_of(system, setting)]
            if missing:
                paths = ", ".join(f"{system}/fold_{f}/decode_{setting}/hyp.tsv" for f in missing)
                warnings.append(f"{system} {setting}: no output for fold(s) {' '.join(missing)} "
                                f"(missing {paths}); its mean and pooled figures use the folds that exist")
    return warnings


def _test_set_warnings(exp):
    warnings = []
    for fold in exp.folds:
        sets = {(s, st): set(h.utts) for (s, st, f), h in exp.decodes.items() if f == fold}
        (key0, utts0), *rest = sets.items()
        for key, utts in rest:
            if utts != utts0:
                warnings.append(f"fold {fold}: {key[0]} {key[1]} scores {len(utts)} utterances, "
                                f"{key0[0]} {key0[1]} {len(utts0)}; the test sets differ")
    return warnings


# ----------------------------------------------------------------------------------------------
# Scoring


def score_setting(exp, system, setting):
    """Per-fold summaries, mean and sample std over folds, pooled summary and pooled confusion."""
    index = {label: i for i, label in enumerate(exp.labels)}
    k = len(exp.labels)
    per_fold, pooled_cm = {}, np.zeros((k, k), dtype=np.int64)
    for fold in exp.folds_of(system, setting):
        hyp = exp.decodes[(system, setting, fold)]
        cm = confusion_matrix([index[r] for r in hyp.refs], [index[h] for h in hyp.hyps], k)
        per_fold[fold] = summarize_confusion(cm)
        pooled_cm += cm
    values = {m: [s[m] for s in per_fold.values()] for m in METRICS}
    return {
        "folds": per_fold,
        "mean": {m: statistics.fmean(v) for m, v in values.items()},
        # Sample std (ddof=1) over folds; undefined (None) with a single fold.
        "std": {m: statistics.stdev(v) if len(v) > 1 else None for m, v in values.items()},
        "pooled": summarize_confusion(pooled_cm),
        "cm": pooled_cm,
    }


def primary_setting(settings, requested=None):
    """The setting of the main table: ``requested`` if the system has it, else the smallest
    nsteps >= 1 with eta 0, else the smallest (nsteps, eta), else argmax, else the first by name
    (nsteps 0, the no-transport ablation, is never the main setting unless it is all there is)."""
    if requested in settings:
        return requested
    parsed = sorted((p, s) for s in settings if (p := parse_setting(s)))
    parsed = [(p, s) for p, s in parsed if p[0] >= 1] or parsed
    deterministic = [(p, s) for p, s in parsed if p[1] == 0.0]
    if deterministic or parsed:
        return (deterministic or parsed)[0][1]
    return "argmax" if "argmax" in settings else sorted(settings)[0]


def score_experiment(exp, primary=None):
    """{(system, setting): score_setting(...)} for every decoding output, plus primaries."""
    if primary is not None and not any(primary in exp.settings(s) for s in exp.systems):
        available = sorted({st for _, st, _ in exp.decodes}, key=setting_key)
        raise ScoreError(f"--primary {primary}: no {exp.exp_dir}/*/fold_*/decode_{primary}/hyp.tsv "
                         f"(settings found: {', '.join(available)})")
    scores = {(s, st): score_setting(exp, s, st) for s in exp.systems for st in exp.settings(s)}
    primaries = {s: primary_setting(exp.settings(s), primary) for s in exp.systems}
    return scores, primaries


# ----------------------------------------------------------------------------------------------
# Report


def pct(x):
    """A fraction as a percentage with one decimal; "-" when undefined."""
    return "-" if x is None else f"{100 * x:.1f}"


def mean_std(result, metric):
    """"71.3 ± 2.1" (mean ± sample std over folds, in %); just the mean with one fold."""
    mean, std = result["mean"][metric], result["std"][metric]
    return pct(mean) if std is None else f"{pct(mean)} ± {pct(std)}"


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


def fold_table(exp, scores, primaries):
    """Fold x system (primary settings): UA, WA, macro-F1, weighted-F1 and the test set size."""
    header = ["Fold", "utts"] + [f"{s} {METRIC_NAMES[m]}" for s in exp.systems for m in METRICS]
    rows = []
    for fold in exp.folds:
        cells, sizes = [], []
        for system in exp.systems:
            summary = scores[(system, primaries[system])]["folds"].get(fold)
            cells += [pct(summary[m]) if summary else "-" for m in METRICS]
            if summary and summary["n"] not in sizes:
                sizes.append(summary["n"])
        rows.append([fold, "/".join(str(n) for n in sizes), *cells])
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


def render_results(exp, scores, primaries, *, title, command, pngs):
    """The whole RESULTS.md text."""
    date = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M:%S %Z")
    out = [f"# {title}", "",
           f"- date: {date}",
           f"- command: `{command}`",
           f"- environment: {environment()}",
           f"- experiment: `{exp.exp_dir}`; labels ({len(exp.labels)}): {', '.join(exp.labels)}; "
           f"folds ({len(exp.folds)}): {', '.join(exp.folds)}", "",
           "Metrics in %. UA = unweighted accuracy (mean per-class recall), WA = weighted accuracy "
           "(plain accuracy), macro-F1 over the classes seen in ref or hyp, weighted-F1 weighted by "
           "reference support. `mean ± std` = mean and sample standard deviation over folds; "
           "pooled = the predictions of all folds scored together.", ""]
    out += [f"> **warning**: {w}" + "  " for w in exp.warnings] + ([""] if exp.warnings else [])
    out += ["## Main results", "", main_table(exp, scores, primaries), "",
            "## Per fold", "", "Systems at their main-table setting: "
            + ", ".join(f"{s} `{primaries[s]}`" for s in exp.systems) + ".", "",
            fold_table(exp, scores, primaries), ""]
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


def calibration_text(exp, primaries, out_dir):
    """The calibration section of genser.bin.calibrate, or "" where posteriors are not probabilities."""
    from genser.bin.calibrate import calibration_section  # imports this module: resolved at call time

    try:
        return "\n".join(["", *calibration_section(exp, primaries, out_dir)]) + "\n"
    except ValueError as e:
        log.warning("no calibration section in the report: %s", e)
        return ""


def main(argv=None):
    argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
    params = load_config(get_parser(), argv)
    setup_logging()
    out = Path(params.out) if params.out else Path(params.exp_dir) / "RESULTS.md"
    try:
        exp = load_experiment(params.exp_dir)
        scores, primaries = score_experiment(exp, params.primary)
    except (ScoreError, OSError) as e:
        raise SystemExit(f"error: {e}") from e
    out.parent.mkdir(parents=True, exist_ok=True)
    pngs = write_plots(exp, scores, primaries, out.parent)
    text = render_results(exp, scores, primaries, title=params.title or f"Results: {exp.exp_dir.resolve().name}",
                          command=f"python -m genser.bin.score {shlex.join(argv)}", pngs=pngs)
    text += calibration_text(exp, primaries, out.parent)
    atomic_write(out, text)
    print(main_table(exp, scores, primaries))
    log.info("wrote %s and %d PNG(s) next to it", out, len(pngs))


if __name__ == "__main__":
    main()
