"""Calibration and confidence of the decoded folds of one experiment (docs/METHOD.md §6).

    python -m genser.bin.calibrate --exp_dir exp/emotion_whisper_base_mean_cmvnauto_train/seed0

For each system at its main-table setting (as genser.bin.score picks it), pooled over the test
folds: accuracy, expected calibration error (ECE, 15 bins), Brier score, NLL and the AUROC of
the largest posterior against correctness; a reliability diagram (reliability_<system>.png).

The temperature of each fold is the one its model holds: genser-train (--calibrate crossfit,
the default) fits it on held-out training speakers and decode applies it, so the table gives the
figures before (T = 1) and after. For models without one, it is fitted on the fold's
hyp_dev.tsv (genser-decode --subset dev: training speakers its model did not train on, never
the test speaker). Where neither exists the report says so and how to get one.

Where Gen-SER settings with eta > 0 have draws.tsv (genser-decode --draws K), the confidence
study ranks the errors of the deterministic Gen-SER decision (same nsteps, eta 0) by the largest
posterior, by the agreement of the K draws, by minus their spread and by the largest mean
posterior over the draws, and the classifier's errors by its largest posterior (AUROC, 0.5 =
no better than chance).

Writes <exp_dir>/CALIBRATION.md (or --out) and the PNGs next to it; genser.bin.score appends
the same section to RESULTS.md.
"""
import argparse
import logging
import shlex
import sys
from pathlib import Path

from genser.bin.common import load_config, setup_logging, str_or_none
from genser.calibration_study import calibration_section
from genser.fileio import atomic_write
from genser.scoring import ScoreError, load_experiment, score_experiment

log = logging.getLogger("genser.calibrate")


def get_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--exp_dir", required=True, help="experiment directory (exp/<name>[/seed<S>]) of stage 4 output")
    p.add_argument("--out", type=str_or_none, default=None, help="Markdown report (default: <exp_dir>/CALIBRATION.md)")
    p.add_argument("--primary", type=str_or_none, default=None, help="decoding setting, as for genser.bin.score")
    return p


def main(argv=None):
    argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
    params = load_config(get_parser(), argv)
    setup_logging()
    out = Path(params.out) if params.out else Path(params.exp_dir) / "CALIBRATION.md"
    try:
        exp = load_experiment(params.exp_dir)
        _, primaries = score_experiment(exp, params.primary)
        lines = calibration_section(exp, primaries, out.parent)
    except (ScoreError, OSError, ValueError) as e:
        raise SystemExit(f"error: {e}") from e
    text = "\n".join([f"# Calibration: {Path(params.exp_dir).resolve().name}", "",
                      f"- command: `python -m genser.bin.calibrate {shlex.join(argv)}`", "", *lines]) + "\n"
    atomic_write(out, text)
    print(text)
    log.info("wrote %s", out)


if __name__ == "__main__":
    main()
