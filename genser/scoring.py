"""Scoring of one experiment: hyp.tsv reading, the experiment model and the per-setting scores.

An experiment dir (exp/<name>) holds <system>/fold_<f>/decode_<setting>/hyp.tsv (stage 4,
genser.bin.decode): <system> is the model kind (genser, classifier, ...), <setting> is
nsteps<N>_eta<E> for Gen-SER and argmax for the classifier.  hyp.tsv has the header
"utt ref hyp <label1> <label2> ..." (tab separated; the label columns hold posteriors).
``load_experiment`` reads and checks them; ``score_experiment`` gives UA / WA / macro-F1 /
weighted-F1 per fold, their mean and sample std over folds, and the pooled figures.
The Markdown report is genser.report; the CLI is genser.bin.score.
"""
import logging
import math
import re
import statistics
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from genser.fileio import atomic_open, read_identity
from genser.folds import fold_key
from genser.metrics import confusion_matrix, summarize_confusion

log = logging.getLogger("genser.score")

METRICS = ("ua", "wa", "macro_f1", "weighted_f1")
SYSTEM_ORDER = ("genser", "classifier")  # then any other system, alphabetically
SETTING_RE = re.compile(r"^nsteps(\d+)_eta(.+)$")


class ScoreError(ValueError):
    """Bad or missing decoding output; the message names the file (and utterance)."""


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
    protocol: str = "clip"

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


def setting_name(nsteps, eta):
    """The decode setting's directory name (decode_<name>/): "nsteps3_eta0.5" (parse_setting reads it)."""
    return f"nsteps{int(nsteps)}_eta{float(eta)}"


def parse_steps(text, minimum=0):
    """'1 3 10' -> [1, 3, 10], each an integer >= ``minimum`` (0: the no-transport ablation, which
    only decode takes; sampling and the ONNX heads need >= 1). The one check of --nsteps."""
    try:
        steps = [int(n) for n in str(text).replace(",", " ").split()]
    except ValueError:
        steps = []
    if not steps or min(steps) < minimum:
        raise ValueError(f"--nsteps must list integers >= {minimum}"
                         f"{' (0: no transport, the initial sample)' if minimum == 0 else ''}, got {text!r}")
    return steps


def parse_etas(text):
    """'0.0 0.5' -> [0.0, 0.5], each a number >= 0. The one check of --eta."""
    try:
        etas = [float(e) for e in str(text).replace(",", " ").split()]
    except ValueError:
        etas = []
    if not etas or min(etas) < 0:
        raise ValueError(f"--eta must list non-negative numbers, got {text!r}")
    return etas


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


def seed_dirs(exp_dir):
    """The per-seed dirs of an experiment (ser.sh: <exp>/seed<S>/<model>/fold_<f>/...); an
    experiment of the older layout (<exp>/<model>/fold_<f>/...) is its own single seed."""
    seeds = sorted((d for d in Path(exp_dir).glob("seed*") if d.is_dir() and d.name[4:].isdigit()),
                   key=lambda d: int(d.name[4:]))
    return seeds or [Path(exp_dir)]


def hyp_name(protocol="clip", subset="test"):
    """The decoding output of a protocol (genser/cmvn.py): hyp.tsv for clip, the headline,
    hyp.<protocol>.tsv for the others; hyp_dev.tsv for the dev subset (decoded clip by clip)."""
    if subset == "dev":
        return "hyp_dev.tsv"
    return "hyp.tsv" if protocol == "clip" else f"hyp.{protocol}.tsv"


def identity_file(hyp_path):
    """The name of the identity file that goes with a hyp.tsv (any protocol) or hyp_dev.tsv."""
    return "identity_dev" if hyp_path.name == "hyp_dev.tsv" else "identity"


def write_hyp(path, utts, refs, preds, scores, labels, identity=None):
    """hyp.tsv (or hyp_dev.tsv), and next to it the identity of the model that made it (checked
    by scoring): ``identity`` for hyp.tsv, ``identity_dev`` for hyp_dev.tsv."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not all(math.isfinite(s) for row in scores for s in row):
        raise ValueError(f"non-finite scores from the model for {path}: the model is broken (diverged?)")
    with atomic_open(path.parent / identity_file(path)) as f:
        f.write(f"identity {identity}\n")
    with atomic_open(path) as f:
        f.write("\t".join(["utt", "ref", "hyp", *labels]) + "\n")
        for utt, ref, pred, row in zip(utts, refs, preds, scores):
            f.write("\t".join([utt, labels[ref], labels[pred], *(f"{s:.6f}" for s in row)]) + "\n")



def find_hyps(exp_dir, protocol="clip"):
    """{(system, setting, fold): path} for every <system>/fold_<f>/decode_<setting>/hyp[.<protocol>].tsv."""
    name = hyp_name(protocol)
    exp_dir = Path(exp_dir)
    if not exp_dir.is_dir():
        raise ScoreError(f"experiment directory {exp_dir} does not exist; stage 3 (training) and "
                         f"stage 4 (decoding) create it")
    found = {}
    for path in sorted(exp_dir.glob(f"*/fold_*/decode_*/{name}")):
        system, fold_dir, decode_dir = path.parts[-4:-1]
        found[(system, decode_dir[len("decode_"):], fold_dir[len("fold_"):])] = path
    if not found:
        raise ScoreError(f"no {exp_dir}/<system>/fold_<f>/decode_<setting>/{name} found; "
                         f"they are produced by stage 4 (decoding{'' if protocol == 'clip' else ' with --protocols ' + protocol})")
    return found


def load_experiment(exp_dir, protocol="clip"):
    """Reads every hyp.tsv of ``protocol`` and checks they agree: same label set, same ref per
    utterance, no utterance in two folds.  Missing folds and differing test sets become warnings."""
    found = find_hyps(exp_dir, protocol)
    _check_listed_folds(exp_dir, found, hyp_name(protocol))
    _check_decode_identity(found)
    decodes = {key: read_hyp(path) for key, path in found.items()}
    first = next(iter(decodes.values()))
    for hyp in decodes.values():
        if set(hyp.labels) != set(first.labels):
            raise ScoreError(f"label set of {hyp.path} ({', '.join(hyp.labels)}) differs from that of "
                             f"{first.path} ({', '.join(first.labels)})")
    _check_refs(decodes)
    exp = Experiment(exp_dir=Path(exp_dir), labels=list(first.labels), decodes=decodes, warnings=[],
                     protocol=protocol)
    exp.warnings.extend(_missing_fold_warnings(exp))
    exp.warnings.extend(_test_set_warnings(exp))
    for warning in exp.warnings:
        log.warning(warning)
    return exp


def _check_listed_folds(exp_dir, found, name):
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
                missing = Path(exp_dir) / system / f"fold_{fold}" / f"decode_{setting}" / name
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
