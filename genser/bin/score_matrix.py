"""Train x test matrices of the cross-corpus recipe (egs/cross, stage 5) -> RESULTS.md + PNGs.

    python -m genser.bin.score_matrix --exp_root exp --out exp/matrix/RESULTS.md \\
        [--commands exp/commands.log] [--notes notes.md] [--genser_setting nsteps1_eta0.0]

Every experiment dir with a ``cell.yaml`` (written by egs/cross stage 3) is one cell; its hyp.tsv
files are pooled over its test folds and scored at the level of the shared classes. How cells are
scored and what the report holds: genser.matrix.
"""
import argparse
import logging
import sys
from pathlib import Path

from genser.bin.common import setup_logging
from genser.fileio import atomic_write
from genser.matrix import load_cells, render_report, score_cell
from genser.scoring import ScoreError

log = logging.getLogger("genser.score_matrix")


def get_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--exp_root", required=True, help="the recipe's exp/ (one sub-dir per cell)")
    p.add_argument("--out", required=True, help="RESULTS.md to write; PNGs go next to it")
    p.add_argument("--commands", help="file of the command lines that made the cells")
    p.add_argument("--notes", help="markdown appended to RESULTS.md (findings written by hand)")
    p.add_argument("--genser_setting", default="nsteps1_eta0.0",
                   help="Gen-SER decoding setting shown in the matrices")
    p.add_argument("--png_dir", help="where the heat maps go (default: next to --out)")
    p.add_argument("--title", default="Cross-corpus results (egs/cross)")
    return p


def main(argv=None):
    params = get_parser().parse_args(argv)
    setup_logging()
    out = Path(params.out)
    try:
        cells = load_cells(params.exp_root)
        if not cells:
            log.error("no cell (exp dir with cell.yaml) under %s; run egs/cross stages 3-4 first", params.exp_root)
            return 1
        scores = {id(c): score_cell(c, params.genser_setting) for c in cells}
    except ScoreError as exc:
        log.error("%s", exc)
        return 1
    commands = None
    if params.commands and Path(params.commands).is_file():
        commands = [x for x in Path(params.commands).read_text().splitlines() if x.strip()]
    notes = Path(params.notes).read_text(encoding="utf-8") if params.notes else None
    text = render_report(cells, scores, out, Path(params.png_dir) if params.png_dir else out.parent,
                         title=params.title, genser_setting=params.genser_setting,
                         commands=commands, notes=notes)
    atomic_write(out, text)
    log.info("wrote %s (%d cells)", out, len(cells))
    return 0


if __name__ == "__main__":
    sys.exit(main())
