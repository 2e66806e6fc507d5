"""Prepares a corpus as a Kaldi-style data dir (wav.scp, utt2spk, utt2emo, utt2fold, ...).

Example:
  python -m genser.bin.prepare_corpus emodb --corpus_dir downloads/emodb --data_dir data/all
  python -m genser.bin.prepare_corpus iemocap --corpus_dir /db/IEMOCAP_full_release \\
      --data_dir data/all --classes 4
  python -m genser.bin.prepare_corpus custom --csv my.csv --data_dir data/all --num_folds 5
`python -m genser.bin.prepare_corpus <corpus> --help` lists the options of one corpus.
"""
import argparse
import logging
import sys

from genser.bin.common import load_config, log_args, setup_logging, str2bool
from genser.corpora import CorpusError, get_corpus, names

COMMON = ("corpus", "corpus_dir", "data_dir", "allow_incomplete", "config")


def get_parser(corpus=None):
    """The options; with ``corpus`` also that corpus's own options."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("corpus", choices=names(), help="which corpus")
    parser.add_argument("--corpus_dir", default=None, help="root of the corpus copy")
    parser.add_argument("--data_dir", required=True, help="output data dir, e.g. data/all")
    parser.add_argument("--allow_incomplete", type=str2bool, default=False,
                        help="warn instead of failing when counts differ or files are missing")
    if corpus is not None:
        get_corpus(corpus).add_arguments(parser.add_argument_group(f"{corpus} options"))
    return parser


def main(argv=None):
    """Entry point; returns 0 on success, 1 when the corpus copy is refused."""
    argv = list(sys.argv[1:] if argv is None else argv)
    corpus = argv[0] if argv and argv[0] in names() else None
    args = load_config(get_parser(corpus), argv)
    setup_logging()
    log_args(args)
    options = {k: v for k, v in vars(args).items() if k not in COMMON}
    try:
        get_corpus(args.corpus).prepare(args.corpus_dir, args.data_dir,
                                        allow_incomplete=args.allow_incomplete, **options)
    except CorpusError as exc:
        logging.error("%s", exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
