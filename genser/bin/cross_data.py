"""Data dirs of the cross-corpus recipe (egs/cross): the pooled dir and one dir per matrix cell.

    python -m genser.bin.cross_data pool --corpus emodb=../emodb/data/all \\
        --corpus urdu=../urdu/data/all --out_dir data/all
    python -m genser.bin.cross_data norm --feat_dir dump/fbank_mean --data_dir data/all \
        --out_dir dump/fbank_mean_cnorm
    python -m genser.bin.cross_data cell --pool_dir data/all --train_sets "emodb urdu" \\
        --test_set urdu --label_map_dir conf/label_map --label_set shared \\
        --out_dir data/emodb+urdu__urdu_shared [--base_config conf/train.yaml \\
        --config_out data/emodb+urdu__urdu_full/train.yaml --taxonomy hierarchical]

See genser/cross.py for what each dir holds.  Errors name the corpus, file and line.
"""
import argparse
import logging
import sys
from pathlib import Path

from genser.bin.common import setup_logging
from genser.cross import (LABEL_SETS, SHARED_LABELS, CrossError, build_cell, normalize_per_corpus,
                          pool_corpora, read_label_map, write_train_config)
from genser.fileio import read_kv
from genser.options import name_value_pairs

log = logging.getLogger("genser.cross_data")


def get_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    pool = sub.add_parser("pool", help="pool corpus data dirs (ids prefixed by corpus)")
    pool.add_argument("--corpus", action="append", default=[], metavar="NAME=DATA_DIR",
                      help="a corpus and its data dir (repeat for each corpus)")
    pool.add_argument("--corpora", default="",
                      help='corpora whose recipes made EGS_DIR/<corpus>/data/all, e.g. "emodb urdu"')
    pool.add_argument("--egs_dir", default="..", help="where the corpus recipes live (with --corpora)")
    pool.add_argument("--out_dir", required=True)
    pool.add_argument("--max_per_class", type=int, default=0,
                      help="keep at most this many utterances per corpus and label (0: all)")
    pool.add_argument("--label_map_dir", default="",
                      help="with it, pool only the utterances whose label <corpus>.txt maps onto --shared_labels "
                           "(the shared-label cells drop the others; leave empty for --label_set full)")
    pool.add_argument("--shared_labels", default=" ".join(SHARED_LABELS))
    norm = sub.add_parser("norm", help="standardise a feature dump per corpus (unsupervised)")
    norm.add_argument("--feat_dir", required=True, help="dump of the pooled dir")
    norm.add_argument("--data_dir", required=True, help="the pooled dir (utt2corpus)")
    norm.add_argument("--out_dir", required=True)
    cell = sub.add_parser("cell", help="the data dir of one train x test cell")
    cell.add_argument("--pool_dir", required=True)
    cell.add_argument("--train_sets", required=True, help='training corpora, e.g. "emodb urdu"')
    cell.add_argument("--test_set", required=True, help="the test corpus")
    cell.add_argument("--label_map_dir", required=True, help="holds <corpus>.txt label maps")
    cell.add_argument("--label_set", default="shared", choices=LABEL_SETS)
    cell.add_argument("--shared_labels", default=" ".join(SHARED_LABELS),
                      help="the shared classes kept (map targets outside them are dropped)")
    cell.add_argument("--out_dir", required=True)
    cell.add_argument("--base_config", help="training YAML the cell's config is generated from")
    cell.add_argument("--config_out", help="where the cell's training YAML goes")
    cell.add_argument("--taxonomy", default="flat", choices=["flat", "hierarchical"],
                      help="hierarchical: model_conf.taxonomy over the cell's families (label_set full)")
    return p


def main(argv=None):
    params = get_parser().parse_args(argv)
    setup_logging()
    try:
        if params.command == "pool":
            try:
                sources = name_value_pairs(params.corpus, "--corpus", "NAME=DATA_DIR", "corpus")
            except ValueError as exc:
                raise CrossError(str(exc)) from None
            for name in params.corpora.split():
                data_dir = Path(params.egs_dir) / name / "data" / "all"
                if not (data_dir / "wav.scp").is_file():
                    raise CrossError(f"{data_dir} not found. Make it with its own recipe first: (cd "
                                     f"{Path(params.egs_dir) / name} && ./run.sh --stage 0 --stop_stage 0 "
                                     f"--corpus_dir <{name} copy>)")
                if name in sources:
                    raise CrossError(f"corpus {name} given twice")
                sources[name] = str(data_dir)
            if not sources:
                raise CrossError("no corpus to pool: give --corpora or --corpus NAME=DATA_DIR")
            keep = None
            if params.label_map_dir:
                shared = set(params.shared_labels.split())
                keep = {c: {lab for lab, target in read_label_map(Path(params.label_map_dir) / f"{c}.txt").items()
                            if target in shared} for c in sources}
            pool_corpora(sources, params.out_dir, params.max_per_class, keep)
            return 0
        if params.command == "norm":
            normalize_per_corpus(params.feat_dir, params.data_dir, params.out_dir)
            return 0
        train_sets = params.train_sets.split()
        corpora = list(dict.fromkeys(train_sets + [params.test_set]))
        maps = {c: read_label_map(Path(params.label_map_dir) / f"{c}.txt") for c in corpora}
        if params.taxonomy == "hierarchical" and params.label_set != "full":
            raise CrossError("--taxonomy hierarchical needs --label_set full (the leaves of the "
                             "families); a flat model on the shared classes is --label_set shared")
        build_cell(params.pool_dir, params.out_dir, train_sets, params.test_set, maps,
                   params.label_set, params.shared_labels.split())
        if params.config_out:
            if not params.base_config:
                raise CrossError("--config_out needs --base_config")
            families = None
            if params.taxonomy == "hierarchical":
                families = read_kv(Path(params.out_dir) / "families")
            write_train_config(params.base_config, params.config_out, families)
            log.info("training config %s (taxonomy %s) from %s", params.config_out,
                     params.taxonomy, params.base_config)
    except CrossError as exc:
        log.error("%s", exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
