"""Stage 2 of ``--feat_norm auto``: per test fold, raw or speaker-normalised features.

    python -m genser.bin.choose_norm --data_dir data/all --task emotion --fold_list exp/x/folds.txt \
        --raw_dir dump/whisper_base_mean --norm_dir dump/whisper_base_mean_spknorm --out_dir exp/x \
        [--speed_perturb_factors "0.9 1.1"]

For the i-th fold of ``--fold_list``, the speaker-label dependence I(speaker; label) / H(label)
of the utterances outside that fold (training and dev, never the test fold; genser/cmvn.py)
decides: at most ``--max_dependence``, the fold trains and decodes on ``--norm_dir``, else on
``--raw_dir``. ``<out_dir>/feats.<i>`` becomes a link to the chosen dump (and
``feats.<i>_sp<f>`` to its speed-perturbed copy), and ``<out_dir>/feat_norm.txt`` holds the
table of the choices.
"""
import argparse
import logging
import os
import sys
from pathlib import Path

from genser.bin.common import setup_logging
from genser.cmvn import AUTO_MAX_DEPENDENCE, label_dependence
from genser.datadir import ATTR_OF_TASK, load_data_dir
from genser.fileio import atomic_write, read_list

log = logging.getLogger("genser.choose_norm")


def get_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data_dir", required=True)
    p.add_argument("--task", default="emotion", choices=sorted(ATTR_OF_TASK))
    p.add_argument("--fold_list", required=True, help="folds.txt of stage 2")
    p.add_argument("--raw_dir", required=True, help="the dump as extracted")
    p.add_argument("--norm_dir", required=True, help="its per-speaker CMVN copy")
    p.add_argument("--speed_perturb_factors", default="", help="factors whose <dump>_sp<f> copies are linked too")
    p.add_argument("--max_dependence", type=float, default=AUTO_MAX_DEPENDENCE)
    p.add_argument("--out_dir", required=True)
    return p


def link(target, name):
    """``name`` -> ``target`` (relative), replacing an older link atomically."""
    tmp = name.with_name(f".{name.name}.tmp")
    tmp.unlink(missing_ok=True)
    os.symlink(os.path.relpath(Path(target).resolve(), name.parent.resolve()), tmp)
    os.replace(tmp, name)


def main(argv=None):
    params = get_parser().parse_args(argv)
    setup_logging()
    data = load_data_dir(params.data_dir)
    labels = data.attr(ATTR_OF_TASK[params.task])
    out = Path(params.out_dir)
    if not params.norm_dir.startswith(params.raw_dir):
        raise SystemExit(f"error: --norm_dir {params.norm_dir} must be --raw_dir {params.raw_dir} plus a suffix")
    rows = ["# index fold utterances speakers dependence features"]
    for i, fold in enumerate(read_list(params.fold_list), start=1):
        train = {u: y for u, y in labels.items() if data.fold.get(u) != fold}
        dep = label_dependence(data.spk, train)
        chosen = params.norm_dir if dep <= params.max_dependence else params.raw_dir
        for suffix, factor in [("", None)] + [(f"_sp{f}", f) for f in params.speed_perturb_factors.split()]:
            target = chosen if factor is None else (
                f"{params.raw_dir}_sp{factor}{params.norm_dir[len(params.raw_dir):]}" if chosen == params.norm_dir
                else f"{params.raw_dir}_sp{factor}")
            if not (Path(target) / "feats.scp").is_file():
                raise SystemExit(f"error: {target}/feats.scp is missing; it is made by stage 1")
            link(target, out / f"feats.{i}{suffix}")
        speakers = len({data.spk[u] for u in train})
        rows.append(f"{i} {fold} {len(train)} {speakers} {dep:.3f} {chosen}")
        log.info("fold %s: speaker-label dependence %.3f over %d training utterances of %d speakers -> %s",
                 fold, dep, len(train), speakers, chosen)
    atomic_write(out / "feat_norm.txt", "\n".join(rows) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
