"""The embedded synthetic corpus (genser.synth) behind the same interface as the real corpora.

``corpus_dir`` is where the wavs are generated; the data dir gets the usual files plus counts.
Folds: ``--num_folds`` speaker-disjoint, gender-balanced; 4 emotions (neutral happy angry sad).
"""
import logging
from pathlib import Path

from genser.corpora.base import CorpusError, check_counts, format_counts, str2bool
from genser.fileio import atomic_open

logger = logging.getLogger(__name__)

NAME = "synth"


def add_arguments(parser):
    parser.add_argument("--num_speakers", type=int, default=8, help="speakers, alternately f/m")
    parser.add_argument("--utts_per_class", type=int, default=10,
                        help="utterances per speaker and emotion")
    parser.add_argument("--num_folds", type=int, default=4, help="speaker-disjoint folds")
    parser.add_argument("--seed", type=int, default=0, help="generator seed")
    return parser


def prepare(corpus_dir, data_dir, num_speakers=8, utts_per_class=10, num_folds=4, seed=0,
            allow_incomplete=False, expected=None):
    """Generates the corpus into ``corpus_dir`` and its data dir; returns the records."""
    from genser.datadir import load_data_dir
    from genser.synth import EMOTIONS, generate_corpus

    if corpus_dir is None:
        raise CorpusError(f"{NAME}: pass --corpus_dir (where the generated wavs go)")
    try:
        generate_corpus(corpus_dir, data_dir=data_dir, num_speakers=int(num_speakers),
                        utts_per_class=int(utts_per_class), num_folds=int(num_folds),
                        seed=int(seed))
    except ValueError as exc:
        raise CorpusError(f"{NAME}: {exc}") from None
    data = load_data_dir(data_dir)
    records = [{"utt": u, "path": data.wav[u], "spk": data.spk[u], "emo": data.emo[u],
                "gender": data.gender[u], "fold": data.fold[u]} for u in data.utts]
    if expected is None:
        expected = {"total": int(num_speakers) * len(EMOTIONS) * int(utts_per_class),
                    "speakers": int(num_speakers)}
    check_counts(NAME, corpus_dir, records, expected, str2bool(allow_incomplete))
    with atomic_open(Path(data_dir) / "counts") as f:
        f.write(format_counts(records, data.label_lists))
    return records
