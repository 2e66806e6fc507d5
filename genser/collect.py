"""One table like a paper's over several experiments (corpora as columns, systems as rows), one
per evaluation protocol, read from the recipes' exp dirs as stage 5 left them.

An exp dir is a recipe's ``exp/<name>`` with ``seed<S>/`` below it (any corpus recipe, egs/custom
included) or a single seed's dir; its probe.yaml (genser.bin.probe) gives the LR probe row.
Every cell is the mean UA over folds, mean ± std over seeds.
"""
from pathlib import Path

import yaml

from genser.report import md_table, mean_std_of, protocol_description
from genser.scoring import ScoreError, load_experiment, score_experiment, seed_dirs

# (row name, system, decoding setting): Gen-SER at N=1 and N=3 (eta 0), the classifier
ROWS = (("Gen-SER N=1", "genser", "nsteps1_eta0.0"), ("Gen-SER N=3", "genser", "nsteps3_eta0.0"),
        ("classifier", "classifier", "argmax"))


def protocols_of(exp_dir):
    """The protocols decoded in an exp dir, clip first (hyp.tsv is clip, hyp.<protocol>.tsv the others)."""
    names = {p.name[len("hyp."):-len(".tsv")] for p in Path(exp_dir).glob("**/decode_*/hyp.*.tsv")}
    return ["clip", *sorted(names, key=lambda q: (q == "speaker-all", len(q), q))]


def collect_exp(exp_dir, protocols):
    """{protocol: {row: [UA per seed]}}, the folds and seeds, and the probe entry (or None)."""
    out, folds, seeds = {}, set(), []
    for path in seed_dirs(exp_dir):
        seeds.append(path.name[len("seed"):] if path != Path(exp_dir) else "-")
        for q in protocols:
            try:
                exp = load_experiment(path, q)
            except ScoreError:
                continue  # this protocol was not decoded here
            scores, _ = score_experiment(exp)
            folds |= set(exp.folds)
            for name, system, setting in ROWS:
                if (system, setting) in scores:
                    out.setdefault(q, {}).setdefault(name, []).append(scores[system, setting]["mean"]["ua"])
    probe_file = Path(exp_dir) / "probe.yaml"
    probe = yaml.safe_load(probe_file.read_text(encoding="utf-8")) if probe_file.is_file() else None
    return out, sorted(folds), seeds, probe


def collect(exps):
    """The Markdown of the tables for ``exps`` ({column name: exp dir})."""
    if not exps:
        raise ValueError("no experiment to collect")
    protocols = []
    for path in exps.values():
        if not Path(path).is_dir():
            raise ValueError(f"experiment dir {path} does not exist")
        protocols += [q for q in protocols_of(path) if q not in protocols]
    data = {name: collect_exp(path, protocols) for name, path in exps.items()}
    lines = []
    for q in protocols:
        rows = []
        for row, _, _ in ROWS:
            cells = [mean_std_of(data[name][0].get(q, {}).get(row, [])) for name in exps]
            if any(c != "-" for c in cells):
                rows.append([row, *cells])
        probe_cells = []
        for name in exps:
            probe = data[name][3]
            entry = probe and probe.get("protocols", {}).get(q)
            probe_cells.append(f"{entry['mean_ua']:.1f}" if entry else "-")
        rows.append(["LR probe", *probe_cells])
        caption = "; ".join(f"{name}: {len(data[name][1])} folds, seeds {' '.join(data[name][2])}" for name in exps)
        lines += [f"## Protocol {q}", "", f"{protocol_description(q)}.", "",
                  f"UA (%), mean over folds; mean ± std over seeds. {caption}. The LR probe has no seeds.", "",
                  md_table(["System", *exps], rows), ""]
    return "\n".join(lines)
