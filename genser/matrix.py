"""Train x test matrices of the cross-corpus recipe (egs/cross, stage 5): scoring and report.

The CLI is genser.bin.score_matrix. Every experiment dir with a ``cell.yaml`` (written by
egs/cross stage 3) is one cell: its training corpora, its test corpus, the label set and taxonomy,
the feature tag, and next to it ``label2shared`` (model label -> shared class).  The cell's hyp.tsv files (stage 4,
genser.bin.decode: "utt ref hyp <label posteriors...>") are pooled over its test folds, so each
test utterance counts once, and scored at the level of the shared classes:

- reference: the shared class of the reference label; an utterance whose label has none (EmoDB
  boredom in a full-label cell tested on EmoDB) is not scored and is counted;
- decision: the shared class with the largest summed posterior over its model labels (the
  family marginal: for flat shared-class models, the plain argmax).  A full-label model may
  put most mass on a leaf outside the shared classes; the closed-set decision above ignores
  such leaves, the "leaf" figures (argmax leaf, scored wrong when it has no shared class) do not.

One section per (features, label set, taxonomy): UA per cell for Gen-SER and the classifier
side by side, in-corpus cells (test corpus also trained on, speaker-disjoint folds) marked
with *, the mean of the other (cross-corpus) cells, and a heat-map PNG next to RESULTS.md.
"""
import collections
import datetime
import logging
import os
import platform
import subprocess
from pathlib import Path

import numpy as np
import yaml

from genser.fileio import read_kv, read_list
from genser.metrics import confusion_matrix, summarize_confusion
from genser.plots import plot_matrices
from genser.report import environment, pct
from genser.scoring import ScoreError, read_hyp, seed_dirs

log = logging.getLogger("genser.matrix")

SYSTEMS = (("genser", "Gen-SER"), ("classifier", "classifier"))


def load_cells(exp_root):
    """The cells under ``exp_root`` (one per <exp>/cell.yaml); ScoreError names a bad one."""
    cells = []
    for meta in sorted(Path(exp_root).glob("*/cell.yaml")):
        try:
            cells.append(load_cell(meta.parent))
        except (OSError, yaml.YAMLError) as exc:
            raise ScoreError(f"{meta.parent}: {exc}") from exc
    return cells


def load_cell(exp_dir):
    """The cell description of one experiment dir, with its label2shared map."""
    exp_dir = Path(exp_dir)
    meta = yaml.safe_load((exp_dir / "cell.yaml").read_text(encoding="utf-8")) or {}
    for key in ("train_sets", "test_set", "label_set", "taxonomy", "feat_tag"):
        if key not in meta:
            raise ScoreError(f"{exp_dir}/cell.yaml: no {key!r}")
    meta["exp_dir"] = exp_dir
    meta["label2shared"] = read_kv(exp_dir / "label2shared")
    meta["row"] = "+".join(meta["train_sets"])
    return meta


def score_hyps(hyps, label2shared, shared):
    """Scores hyp.tsv contents (list of genser.scoring.Hyp) at the shared-class level.

    Returns {"family": summary, "leaf": summary, "unscored": n, "n": n} (summaries of
    genser.metrics.summarize_confusion over ``shared``).
    """
    index = {x: i for i, x in enumerate(shared)}
    refs, fam, leaf, unscored = [], [], [], 0
    for hyp in hyps:
        columns = [label2shared.get(x) for x in hyp.labels]
        keep = [j for j, s in enumerate(columns) if s in index]
        if not keep:
            raise ScoreError(f"{hyp.path}: no label column maps to a shared class {shared}")
        member = np.zeros((len(hyp.labels), len(shared)))
        for j in keep:
            member[j, index[columns[j]]] = 1.0
        marginal = np.asarray(hyp.scores, dtype=np.float64) @ member  # [N, K]: summed posterior of each shared class
        for i, (ref, pred) in enumerate(zip(hyp.refs, hyp.hyps)):
            target = label2shared.get(ref)
            if target not in index:
                unscored += 1
                continue
            refs.append(index[target])
            fam.append(int(np.argmax(marginal[i])))
            # An argmax leaf without a shared class is wrong: any class but the reference.
            leaf.append(index[label2shared[pred]] if label2shared.get(pred) in index
                        else (index[target] + 1) % len(shared))
    if not refs:
        raise ScoreError(f"{hyps[0].path if hyps else '?'}: no utterance with a shared class")
    k = len(shared)
    fam_cm = confusion_matrix(refs, fam, k)
    return {"family": summarize_confusion(fam_cm), "leaf": summarize_confusion(confusion_matrix(refs, leaf, k)),
            "unscored": unscored, "n": len(refs), "cm": fam_cm, "classes": len(set(refs))}


def score_cell(cell, genser_setting):
    """{system: score dict or None}: the pooled scores of each seed, and their mean UA.

    A system whose folds are not all decoded (in some seed) is None, with a warning.
    """
    exp_dir = cell["exp_dir"]
    folds = read_list(exp_dir / "folds.txt") if (exp_dir / "folds.txt").is_file() else []
    shared = list(cell.get("shared_labels") or sorted(set(cell["label2shared"].values())))
    out = {}
    for system, _ in SYSTEMS:
        setting = genser_setting if system == "genser" else "argmax"
        per_seed, missing = [], []
        for seed_dir in seed_dirs(exp_dir):
            if not (seed_dir / system).is_dir():
                continue
            paths = [seed_dir / system / f"fold_{f}" / f"decode_{setting}" / "hyp.tsv" for f in folds]
            missing += [p for p in paths if not p.is_file()]
            if folds and not missing:
                per_seed.append(score_hyps([read_hyp(p) for p in paths], cell["label2shared"], shared))
        if not folds or missing or not per_seed:
            if missing or not folds:
                log.warning("%s: %s not scored, missing %s", exp_dir, system,
                            missing[0] if missing else f"{exp_dir}/folds.txt")
            out[system] = None
            continue
        result = dict(per_seed[0])
        for level in ("family", "leaf"):
            result[level] = dict(per_seed[0][level])
            for metric in ("ua", "wa", "macro_f1"):
                result[level][metric] = float(np.mean([r[level][metric] for r in per_seed]))
        uas = [r["family"]["ua"] for r in per_seed]
        result.update(folds=len(folds), seeds=len(per_seed),
                      ua_std=float(np.std(uas, ddof=1)) if len(uas) > 1 else None)
        out[system] = result
    return out


def row_order(rows, cols):
    """Single corpora in column order first, then combinations by size."""
    def key(row):
        parts = row.split("+")
        first = min((cols.index(p) for p in parts if p in cols), default=len(cols))
        return (len(parts), first, row)
    return sorted(rows, key=key)


def git_info(path):
    """(HEAD commit, the merged main commit) of the repository holding ``path``, or None."""
    def git(*args):
        try:
            return subprocess.run(["git", "-C", str(path), *args], capture_output=True, text=True,
                                  check=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return None
    head = git("log", "-1", "--format=%h %s")
    base = git("merge-base", "HEAD", "main")
    base = git("log", "-1", "--format=%h %ad %s", "--date=short", base) if base else None
    return head, base


def render_group(key, cells, scores, png_name):
    feat, label_set, taxonomy = key
    cols = sorted({c["test_set"] for c in cells})
    rows = row_order({c["row"] for c in cells}, cols)
    by_pos = {(c["row"], c["test_set"]): c for c in cells}
    marked = {(c["row"], c["test_set"]) for c in cells if c["test_set"] in c["train_sets"]}
    lines = [f"## {feat}, {label_set} labels, {taxonomy} taxonomy", ""]
    header = ["train \\ test"] + [f"{col} {name}" for col in cols for _, name in SYSTEMS]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "---|" * len(header))
    values = {s: {} for s, _ in SYSTEMS}
    for row in rows:
        out = [row]
        for col in cols:
            cell = by_pos.get((row, col))
            for system, _ in SYSTEMS:
                res = scores[id(cell)][system] if cell else None
                ua = res["family"]["ua"] if res else None
                values[system][row, col] = ua
                mark = "*" if (row, col) in marked and ua is not None else ""
                out.append(pct(ua) + mark)
        lines.append("| " + " | ".join(out) + " |")
    means = []
    for system, name in SYSTEMS:
        off = [v for pos, v in values[system].items() if pos not in marked and v is not None]
        means.append(f"{name} {pct(float(np.mean(off))) if off else pct(None)} ({len(off)} cells)")
    lines += ["", "UA (%) at the shared-class level, pooled over the test folds (mean over seeds); "
              "* = in-corpus "
              "(the test corpus is also trained on; its own speaker-disjoint folds). "
              "Mean of the cross-corpus (unmarked) cells: " + "; ".join(means) + ".", ""]
    # Chance UA: a constant answer recalls one class fully and the others not at all, 1/K for K
    # classes of the test set at the shared level (a cell where a model predicts one class
    # everywhere sits exactly there).
    detail = ["| cell | system | UA | chance UA | WA | macro-F1 | leaf-argmax UA | test utts | folds | seeds | "
              "not scored |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        for col in cols:
            cell = by_pos.get((row, col))
            if not cell:
                continue
            for system, name in SYSTEMS:
                res = scores[id(cell)][system]
                if not res:
                    continue
                fam, leaf = res["family"], res["leaf"]
                std = f" ± {pct(res['ua_std'])}" if res["ua_std"] is not None else ""
                chance = pct(1.0 / res["classes"]) if res.get("classes") else "-"
                detail.append(f"| {row} → {col} | {name} | {pct(fam['ua'])}{std} | {chance} | {pct(fam['wa'])} | "
                              f"{pct(fam['macro_f1'])} | {pct(leaf['ua'])} | {res['n']} | "
                              f"{res['folds']} | {res['seeds']} | {res['unscored']} |")
    lines += detail + ["", f"![{feat} {label_set} {taxonomy}]({png_name})", ""]
    panels = [(name, values[system]) for system, name in SYSTEMS]
    return lines, panels, rows, cols, marked


def ua_of(scores, cell, system):
    res = scores[id(cell)][system] if cell else None
    return res["family"]["ua"] if res else None


def diff(a, b):
    """a - b in percentage points, signed; "-" when either is undefined (as report.pct)."""
    return "-" if a is None or b is None else f"{100 * (a - b):+.1f}"


def comparisons(groups, scores):
    """Markdown lines: multi-corpus against single-corpus rows, hierarchical against flat."""
    lines = ["## Comparisons", "",
             "Multi-corpus training against single-corpus training, per test corpus (same features, "
             "labels and taxonomy): Δ = multi minus the best single-corpus row.", "",
             "| features | labels, taxonomy | test | system | multi (row) | in-corpus single | "
             "cross-corpus single (row) | Δ |", "|---|---|---|---|---|---|---|---|"]
    for (feat, label_set, taxonomy), cells in sorted(groups.items()):
        by_pos = {(c["row"], c["test_set"]): c for c in cells}
        for col in sorted({c["test_set"] for c in cells}):
            multi = [c for c in cells if c["test_set"] == col and len(c["train_sets"]) > 1]
            singles = [c for c in cells if c["test_set"] == col and len(c["train_sets"]) == 1]
            if not multi or not singles:
                continue
            for system, name in SYSTEMS:
                for m in multi:
                    inc = by_pos.get((col, col))
                    cross = [c for c in singles if c["row"] != col]
                    best = [v for v in [ua_of(scores, inc, system)] + [ua_of(scores, c, system) for c in cross]
                            if v is not None]
                    cross_txt = ", ".join(f"{pct(ua_of(scores, c, system))} ({c['row']})" for c in cross) or pct(None)
                    lines.append(f"| {feat} | {label_set}, {taxonomy} | {col} | {name} | "
                                 f"{pct(ua_of(scores, m, system))} ({m['row']}) | {pct(ua_of(scores, inc, system))} | "
                                 f"{cross_txt} | {diff(ua_of(scores, m, system), max(best) if best else None)} |")
    lines += ["", "Hierarchical code on the full label sets against the flat model on the shared classes, "
              "per cell (same features): Δ = hierarchical minus flat. The classifier has no code: its "
              "row shows the effect of the full label set alone.", "",
              "| features | cell | system | flat, shared | hierarchical, full | Δ | full, flat code | Δ code |",
              "|---|---|---|---|---|---|---|---|"]
    feats = sorted({k[0] for k in groups})
    for feat in feats:
        flat = {(c["row"], c["test_set"]): c for c in groups.get((feat, "shared", "flat"), [])}
        hier = {(c["row"], c["test_set"]): c for c in groups.get((feat, "full", "hierarchical"), [])}
        full_flat = {(c["row"], c["test_set"]): c for c in groups.get((feat, "full", "flat"), [])}
        for pos in sorted(set(flat) & set(hier)):
            for system, name in SYSTEMS:
                f, h = ua_of(scores, flat[pos], system), ua_of(scores, hier[pos], system)
                ff = ua_of(scores, full_flat.get(pos), system)
                lines.append(f"| {feat} | {pos[0]} → {pos[1]} | {name} | {pct(f)} | {pct(h)} | {diff(h, f)} | "
                             f"{pct(ff)} | {diff(h, ff)} |")
    return lines + [""]


def render_report(cells, scores, out, png_dir, *, title, genser_setting, commands=None, notes=None):
    """RESULTS.md text of the scored cells (``scores``: {id(cell): score_cell(cell)}); writes the
    heat-map PNGs into ``png_dir``. ``commands``: command lines shown once each, in order;
    ``notes``: Markdown appended at the end."""
    groups = collections.defaultdict(list)
    for cell in cells:
        groups[cell["feat_tag"], cell["label_set"], cell["taxonomy"]].append(cell)
    head, base = git_info(cells[0]["exp_dir"].resolve())  # the repository that ran the cells
    date = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M:%S %Z")
    text = [f"# {title}", "", f"- date: {date}; host: {platform.node()}",
            f"- machine: {environment()}",
            f"- code: {head or 'unknown'}; main merged at: {base or 'unknown'}",
            f"- Gen-SER decoding: {genser_setting}; classifier: argmax", ""]
    if commands:
        commands = list(dict.fromkeys(commands))
        block = ["```sh"] + commands + ["```"]
        if len(commands) > 10:  # one line per cell: folded, so that the matrices come first
            block = [f"<details><summary>{len(commands)} recipe command lines</summary>", ""] + block + ["", "</details>"]
        text += ["Commands (from the recipe directory, in order):", ""] + block + [""]
    for key in sorted(groups):
        png = Path(png_dir) / f"matrix_{'_'.join(key)}.png"
        link = os.path.relpath(png, Path(out).parent)
        lines, panels, rows, cols, marked = render_group(key, groups[key], scores, link)
        text += lines
        if any(v is not None for _, vals in panels for v in vals.values()):
            plot_matrices(panels, rows, cols, png, f"UA (%): {', '.join(key)}", marked)
    text += comparisons(groups, scores)
    if notes:
        text += [notes.rstrip(), ""]
    return "\n".join(text).rstrip() + "\n"
