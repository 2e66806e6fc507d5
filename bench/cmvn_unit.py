#!/usr/bin/env python3
"""What per-speaker CMVN costs when the speaker is not known: a trained recipe's models decoded
with their test speaker's utterances normalised together (as in the recipe), and one by one (a
file classified whole by genser-infer, which leans on the training dump's moments).

    python bench/cmvn_unit.py --exp_dir egs/emodb/exp/emotion_whisper_base_mean_normauto_train \
        --raw_dir egs/emodb/dump/whisper_base_mean --data_dir egs/emodb/data/all --seed 0

Reads the raw dump, so the normalisation is genser-infer's (genser.cmvn.normalize_unit with the
moments kept in each model); pooled UA over the folds.
"""
import argparse
import sys
from pathlib import Path

import torch

from genser.checkpoint import load_model
from genser.cmvn import normalize_unit
from genser.datadir import load_data_dir
from genser.features import FeatureReader, pad_collate
from genser.metrics import summarize


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--exp_dir", required=True)
    p.add_argument("--raw_dir", required=True)
    p.add_argument("--data_dir", required=True)
    p.add_argument("--task", default="emotion")
    p.add_argument("--seed", default="0")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    reader, data = FeatureReader(args.raw_dir), load_data_dir(args.data_dir)
    print("| model | speaker's utterances together | each utterance alone | folds |")
    print("|---|---|---|---|")
    for kind in ("genser", "classifier"):
        refs, preds = [], {"together": [], "alone": []}
        folds = sorted((Path(args.exp_dir) / f"seed{args.seed}" / kind).glob("fold_*"))
        for fold_dir in folds:
            model, extra = load_model(fold_dir / "model.pt")
            cmvn = extra["feats"].get("cmvn")
            if not cmvn:
                raise SystemExit(f"{fold_dir}/model.pt was not trained on per-speaker CMVN")
            utts = (fold_dir / "test.list").read_text().split()
            refs += data.targets(args.task, utts, model.labels)
            raw = [reader[u] for u in utts]
            for name, feats in (("together", normalize_unit(raw, cmvn)[0]),
                                ("alone", [normalize_unit([f], cmvn)[0][0] for f in raw])):
                batch, lengths, _ = pad_collate([(f, 0) for f in feats])
                preds[name] += model.predict(batch, lengths)["pred"].tolist()
        k = len(model.labels)
        ua = {n: 100 * summarize(refs, v, k)["ua"] for n, v in preds.items()}
        print(f"| {kind} | {ua['together']:.1f} | {ua['alone']:.1f} | {len(folds)} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
