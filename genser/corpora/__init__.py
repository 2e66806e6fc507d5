"""Corpus preparers: each module turns one corpus, as users have it on disk, into a data dir.

Every module has ``NAME``, ``add_arguments(parser)`` (its own options) and
``prepare(corpus_dir, data_dir, *, allow_incomplete=False, expected=None, **options)``, which
checks the counts found against the published ones (``expected`` overrides them), writes the data
dir (wav.scp, utt2spk, spk2utt, utt2emo, utt2gender, utt2fold, labels.*) plus a ``counts`` table,
and returns the records.  A damaged copy raises ``CorpusError`` naming the file.
"""
import importlib

from genser.corpora.base import CorpusError

CORPORA = {
    "iemocap": "genser.corpora.iemocap",
    "meld": "genser.corpora.meld",
    "cremad": "genser.corpora.cremad",
    "ravdess": "genser.corpora.ravdess",
    "emodb": "genser.corpora.emodb",
    "urdu": "genser.corpora.urdu",
    "custom": "genser.corpora.custom",
}

__all__ = ["CORPORA", "CorpusError", "get_corpus", "names"]


def names():
    """The registered corpus names."""
    return sorted(CORPORA)


def get_corpus(name):
    """The preparer module of corpus ``name``."""
    if name not in CORPORA:
        raise ValueError(f"unknown corpus {name!r}; known: {', '.join(names())}")
    return importlib.import_module(CORPORA[name])
