"""The logistic-regression probe of a feature dump under the evaluation protocols (stage 5).

    python -m genser.bin.probe --feat_dir dump/whisper_base_mean --data_dir data/all --task emotion \
        --fold_list exp/x/folds.txt --feat_norm auto --protocols "clip speaker-3 speaker-all" \
        --out exp/x/probe.yaml

The floor a trained model must clear, on the same features, folds and normalisation (genser/probe.py).
Writes ``--out`` (YAML: per protocol the mean UA over folds, the pooled UA / WA / macro-F1 and the
per-fold UA; the C chosen per fold), which stage 5 sets beside the models in RESULTS.md. Utterance
dumps only (pooling mean or meanstd): a frame dump has no probe.
"""
import argparse
import logging
import sys

import yaml

from genser.bin.common import setup_logging
from genser.cmvn import FEAT_NORMS, parse_protocols
from genser.datadir import ATTR_OF_TASK, load_data_dir
from genser.features import FeatureReader, load_all
from genser.fileio import atomic_write, read_list
from genser.folds import test_folds
from genser.probe import Probe, run_probe

log = logging.getLogger("genser.probe")


def get_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--feat_dir", required=True, help="the raw utterance-level dump of stage 1")
    p.add_argument("--data_dir", required=True)
    p.add_argument("--task", default="emotion", choices=sorted(ATTR_OF_TASK))
    p.add_argument("--fold_list", help="folds.txt of stage 2 (default: every test fold of the data dir)")
    p.add_argument("--feat_norm", default="none", choices=FEAT_NORMS, help="as genser-train --feat_norm")
    p.add_argument("--cmvn_relevance", type=float, default=10.0, help="as genser-train --cmvn_relevance")
    p.add_argument("--norm_k", default="all", help="as genser-train --norm_k (the first unit size is used)")
    p.add_argument("--like", help="a genser-train config.yaml (<exp>/seed<S>/<model>/config.yaml): its feat_norm, "
                                  "cmvn_relevance and norm_k replace the three options above")
    p.add_argument("--protocols", default="clip", help="evaluation protocols of the test clips, clip first")
    p.add_argument("--inner", type=int, default=3, help="speaker groups of the inner CV that chooses C")
    p.add_argument("--out", required=True, help="YAML results file")
    return p


def to_yaml(result, protocols, params):
    def fig(s):
        return {k: round(100 * s[k], 2) for k in ("ua", "wa", "macro_f1")}

    out = {"feat_dir": params.feat_dir, "task": params.task, "feat_norm": params.feat_norm,
           "cmvn_relevance": params.cmvn_relevance, "norm_k": params.norm_k, "C": result["C"]}
    out["protocols"] = {q: {"mean_ua": round(100 * result[q]["mean_ua"], 2), "pooled": fig(result[q]["pooled"]),
                            "folds": {f: round(100 * s["ua"], 2) for f, s in result[q]["folds"].items()}}
                        for q in protocols}
    return out


def main(argv=None):
    params = get_parser().parse_args(argv)
    setup_logging()
    try:
        protocols = parse_protocols(params.protocols)
    except ValueError as e:
        raise SystemExit(f"error: --protocols: {e}") from None
    if params.like:  # normalise as the models did
        conf = yaml.safe_load(open(params.like, encoding="utf-8")) or {}
        for key in ("feat_norm", "cmvn_relevance", "norm_k"):
            if key in conf:
                setattr(params, key, conf[key])
    data = load_data_dir(params.data_dir)
    reader = FeatureReader(params.feat_dir)
    if reader.meta["pooling"] == "none":
        raise SystemExit(f"error: {params.feat_dir} holds frames (pooling none); the probe takes utterance dumps")
    attr = getattr(data, ATTR_OF_TASK[params.task])
    labels = sorted(set(attr.values()))
    folds = read_list(params.fold_list) if params.fold_list else test_folds(data)
    probe = Probe(load_all(reader, data.utts), data.spk, attr, params.feat_norm, params.cmvn_relevance,
                  params.norm_k)

    def progress(fold, c, uas):
        log.info("fold %s: C=%g %s", fold, c, " ".join(f"{q} UA {100 * v:.1f}" for q, v in uas.items()))

    result = run_probe(probe, data, labels, folds, protocols, params.inner, progress)
    for q in protocols:
        log.info("LR probe, %s: mean UA %.1f, pooled UA %.1f", q, 100 * result[q]["mean_ua"],
                 100 * result[q]["pooled"]["ua"])
    atomic_write(params.out, yaml.safe_dump(to_yaml(result, protocols, params), sort_keys=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
