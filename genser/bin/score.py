"""Score the decoded folds of one experiment into RESULTS.md (stage 5).

    python -m genser.bin.score --exp_dir exp/emotion_fbank [--out exp/emotion_fbank/RESULTS.md]

Reads every <exp_dir>/<system>/fold_<f>/decode_<setting>/hyp.tsv written by stage 4
(genser.bin.decode; layout and scores in genser.scoring) and writes the report of genser.report:
UA / WA / macro-F1 / weighted-F1 per fold, mean +- std over folds, pooled figures, the steps
ablation, and the PNGs next to it (confusion_<system>_<setting>.png, steps_ablation.png).
"""
import argparse
import logging
import shlex
import sys
from pathlib import Path

from genser.bin.common import load_config, setup_logging, str_or_none
from genser.calibration_study import calibration_section
from genser.fileio import atomic_write
from genser.cmvn import parse_protocols
from genser.folds import read_degenerate_folds
from genser.report import main_table, protocol_section, render_results, write_plots
from genser.scoring import ScoreError, load_experiment, score_experiment

log = logging.getLogger("genser.score")


def get_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", type=str_or_none, default=None, help="YAML file with any option below")
    p.add_argument("--exp_dir", required=True, help="experiment directory (exp/<name>) holding stage-4 output")
    p.add_argument("--out", type=str_or_none, default=None, help="Markdown report (default: <exp_dir>/RESULTS.md); "
                   "PNGs are written next to it")
    p.add_argument("--title", type=str_or_none, default=None, help="report title (default: the exp_dir name)")
    p.add_argument("--protocols", default="clip",
                   help="evaluation protocols decoded by stage 4 (genser/cmvn.py), clip first: the report's tables "
                        "are clip's, and a section sets all of them side by side")
    p.add_argument("--primary", type=str_or_none, default=None,
                   help="decoding setting shown in the main table for systems that have it, e.g. nsteps1_eta0.0 "
                   "(default: the smallest nsteps with eta 0)")
    return p


def calibration_text(exp, primaries, out_dir):
    """The calibration section (genser.calibration_study), or "" where posteriors are not probabilities."""
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
        per_protocol = {}
        for protocol in parse_protocols(params.protocols):
            exp = load_experiment(params.exp_dir, protocol)
            per_protocol[protocol] = (exp, *score_experiment(exp, params.primary))
    except (ScoreError, OSError, ValueError) as e:
        raise SystemExit(f"error: {e}") from e
    exp, scores, primaries = per_protocol["clip"]
    out.parent.mkdir(parents=True, exist_ok=True)
    pngs = write_plots(exp, scores, primaries, out.parent)
    text = render_results(exp, scores, primaries, title=params.title or f"Results: {exp.exp_dir.resolve().name}",
                          command=f"python -m genser.bin.score {shlex.join(argv)}", pngs=pngs,
                          degenerate=read_degenerate_folds(params.exp_dir))
    if len(per_protocol) > 1:
        text += "\n".join(["", *protocol_section(per_protocol, params.exp_dir)])
    text += calibration_text(exp, primaries, out.parent)
    atomic_write(out, text)
    print(main_table(exp, scores, primaries))
    log.info("wrote %s and %d PNG(s) next to it", out, len(pngs))


if __name__ == "__main__":
    main()
