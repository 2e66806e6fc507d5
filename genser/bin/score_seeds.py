"""Aggregate the per-seed results of one experiment into its RESULTS.md (stage 5).

    python -m genser.bin.score_seeds --exp_dir exp/emotion_fbank_train --seeds "0 1 2"

Every <exp_dir>/seed<S> is a scored experiment (genser.bin.score wrote seed<S>/RESULTS.md). This
writes <exp_dir>/RESULTS.md: each system's figures per seed, their mean and std over seeds (the
std of the seed means), and Gen-SER minus the classifier over the matched (fold, seed) pairs
with an exact sign test and Wilcoxon signed-rank test, so that "beats" carries a p-value.

Loading each seed's experiment (genser.scoring.load_experiment) checks that every fold of
folds.txt has a hyp.tsv and that each was decoded from the model its fold holds now.
"""
import argparse
import logging
import sys
from pathlib import Path

from genser.bin.common import setup_logging
from genser.fileio import atomic_write
from genser.cmvn import parse_protocols
from genser.folds import read_degenerate_folds
from genser.report import environment, paired_table, protocol_description, seed_table, summary_table
from genser.scoring import ScoreError, load_experiment, score_experiment

log = logging.getLogger("genser.score")


def get_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--exp_dir", required=True)
    p.add_argument("--seeds", required=True, help='seeds to aggregate, e.g. "0 1 2"')
    p.add_argument("--protocols", default="clip", help="evaluation protocols decoded by stage 4, clip first")
    p.add_argument("--probe", help="probe.yaml of genser.bin.probe: its row joins every protocol's table")
    p.add_argument("--out", help="default: <exp_dir>/RESULTS.md")
    p.add_argument("--title", default=None)
    return p


def render(exp_dir, per_protocol, title, probe=None, degenerate=None):
    """The summary over protocols, then one section per protocol (clip, the headline, first): over
    seeds, then the paired test."""
    clip = per_protocol["clip"]
    any_exp = next(iter(clip.values()))[0]
    systems = any_exp.systems
    lines = [f"# {title}", "", f"- experiment: `{exp_dir}`", f"- seeds: {' '.join(clip)}",
             f"- folds: {' '.join(any_exp.folds)}", f"- environment: {environment()}", "",
             "Mean over folds per seed, then mean ± std over seeds (std of the seed means). Each seed's "
             "own tables: " + ", ".join(f"[seed {s}](seed{s}/RESULTS.md)" for s in clip) + ".", "",
             *(f"> **note**: degenerate fold {fold} is in these means (--allow_degenerate_folds): {why}  "
               for fold, why in (degenerate or {}).items()), *([""] if degenerate else []),
             "## Summary: UA by evaluation protocol", "",
             "Which statistics of the test speaker each decision used: clip none (the headline, what a user "
             "gets on one file), speaker-K K unlabelled clips of the speaker, speaker-all all of them. "
             "The LR probe is the logistic-regression floor on the same features, folds and normalisation "
             "(genser.bin.probe; deterministic, no seeds).", "",
             summary_table(per_protocol, systems, probe), ""]
    for protocol, per_seed in per_protocol.items():
        lines += [f"## Protocol {protocol}", "", f"{protocol_description(protocol)}.", "",
                  seed_table(per_seed, systems, probe and probe["protocols"].get(protocol)), ""]
        if "genser" in systems and "classifier" in systems:
            lines += [f"### Gen-SER − classifier, paired over (fold, seed), {protocol}", "",
                      "Differences of per-fold figures at the main settings; exact two-sided tests, ties dropped.",
                      "", paired_table(per_seed, "genser", "classifier"), ""]
    return "\n".join(lines)


def main(argv=None):
    args = get_parser().parse_args(argv)
    setup_logging()
    exp_dir = Path(args.exp_dir)
    per_protocol = {}
    try:
        for protocol in parse_protocols(args.protocols):
            per_seed = per_protocol.setdefault(protocol, {})
            for seed in args.seeds.split():
                exp = load_experiment(exp_dir / f"seed{seed}", protocol)  # checks folds.txt and stale decodes
                per_seed[seed] = (exp, *score_experiment(exp))
    except (ScoreError, ValueError) as exc:
        log.error("%s", exc)
        return 1
    probe = None
    if args.probe:
        import yaml

        probe = yaml.safe_load(Path(args.probe).read_text(encoding="utf-8"))
    out = Path(args.out or exp_dir / "RESULTS.md")
    atomic_write(out, render(exp_dir, per_protocol, args.title or f"Results: {exp_dir.name}", probe,
                             read_degenerate_folds(exp_dir)))
    log.info("wrote %s", out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
