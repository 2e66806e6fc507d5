"""Mean and variance normalisation per speaker (or per corpus) of a feature dump.

Kaldi's ``compute-cmvn-stats --spk2utt`` and ``apply-cmvn --utt2spk`` on genser's [T, L, D]
dumps: every group (speaker, corpus) is brought to zero mean and, with ``norm_vars``, unit
variance per layer and dimension, with statistics over all of its frames (the utterance vectors
of a pooled dump). It is unsupervised adaptation: a test speaker's statistics come from its
audio, never from its labels (docs/TRAINING.md, "Speaker normalisation").

Models normalise inside (SpeakerNorm below), from the moments of their training utterances;
normalize_dump serves the per-corpus standardisation of egs/cross.

A group with few utterances has noisy statistics, and for a group of one utterance they would
erase the utterance itself. So the group's moments are shrunk towards those of the whole dump by
a relevance factor r counted in utterances, as in MAP adaptation (Reynolds et al., 2000)::

    m_g = (n_g mean_g + r mean_all) / (n_g + r)          (the same for the second moment)

r = 0 is plain per-group CMVN; a large r tends to one global CMVN. The global moments are kept
with the dump (``feats.yaml``, key ``cmvn``) and so in every model trained on it, so that
genser-infer can normalise new audio the same way, with the moments of the audio it is given.
"""
import collections
import logging
import math
import zlib
from pathlib import Path

import numpy as np

__all__ = ["Moments", "accumulate", "normalize", "normalize_dump", "normalize_unit", "label_dependence", "AUTO_MAX_DEPENDENCE",
           "CMVN_GROUPS", "FEAT_NORMS", "protocol_k", "parse_protocols", "parse_norm_k", "utterance_moments",
           "pool", "draw_unit", "SpeakerNorm", "choose_feat_norm", "fit_prior"]

log = logging.getLogger(__name__)

CMVN_GROUPS = ("spk", "corpus")
EPS = 1e-5  # added to the standard deviation, as in cross-corpus standardisation before
# --feat_norm auto normalises per speaker when label_dependence over the training utterances is at
# most this: far from EmoDB's emotions (0.03: every actor speaks every emotion; per-speaker CMVN
# lifts a linear probe by 4 UA), from URDU's (0.92: talk-show guests each heard in one or two
# emotions; it drops the probe below chance) and from any gender task (1: one gender per speaker).
AUTO_MAX_DEPENDENCE = 0.25


class Moments:
    """Running first and second moments (float64) of [L, D] frames, weighted per utterance."""

    def __init__(self):
        self.n = 0.0  # utterances
        self.s1 = 0.0  # sum over utterances of the per-utterance frame mean
        self.s2 = 0.0  # ... and of the per-utterance mean of squares

    @classmethod
    def of(cls, mean, var):
        """The moments of one utterance's worth of data with this mean and variance."""
        m = cls()
        m.n, m.s1 = 1.0, np.asarray(mean, dtype=np.float64)
        m.s2 = np.asarray(var, dtype=np.float64) + m.s1 * m.s1
        return m

    def add(self, feats):
        """Adds one utterance, feats [T, L, D]: each utterance weighs one, whatever its length."""
        x = np.asarray(feats, dtype=np.float64)
        self.n += 1.0
        self.s1 = self.s1 + x.mean(axis=0)
        self.s2 = self.s2 + (x * x).mean(axis=0)

    def mean_var(self, prior=None, relevance=0.0):
        """(mean, var) [L, D], shrunk towards ``prior`` (another Moments) by ``relevance`` utterances."""
        n, s1, s2 = self.n, self.s1, self.s2
        if prior is not None and relevance > 0:
            n = n + relevance
            s1 = s1 + relevance * prior.s1 / prior.n
            s2 = s2 + relevance * prior.s2 / prior.n
        if n <= 0:
            raise ValueError("no utterances to take statistics from")
        mean = s1 / n
        return mean, np.maximum(s2 / n - mean * mean, 0.0)


def accumulate(reader, utt2group):
    """(moments per group, moments of all) over the utterances of ``utt2group`` in ``reader``.

    Reads one utterance at a time, so a frame-level dump never has to fit in memory.
    """
    groups, everything = collections.defaultdict(Moments), Moments()
    for utt in sorted(utt2group):
        x = reader[utt]
        groups[utt2group[utt]].add(x)
        everything.add(x)
    return dict(groups), everything


def label_dependence(utt2spk, utt2label):
    """How much the speaker tells about the label: I(speaker; label) / H(label) over the given
    utterances, from their counts (0: every speaker has the pooled label mix; 1: the speaker
    gives the label away, as for gender, or for talk-show guests heard in one emotion each).

    Per-speaker CMVN subtracts a speaker's mean, which is label-neutral only when the speaker's
    utterances cover the labels like everyone's; where speaker and label go together, it removes
    the label itself. Computed on training utterances only, it tells the two cases apart.
    """
    utts = sorted(utt2label)
    if not utts:
        raise ValueError("no utterances to measure the label dependence on")
    n = len(utts)
    joint = collections.Counter((utt2spk[u], utt2label[u]) for u in utts)
    spk = collections.Counter(utt2spk[u] for u in utts)
    lab = collections.Counter(utt2label[u] for u in utts)
    h = -sum(c / n * math.log(c / n) for c in lab.values())
    if h == 0:
        return 1.0  # a single label: nothing for the speaker to give away, nothing to normalise for
    mi = sum(c / n * math.log(c * n / (spk[s] * lab[y])) for (s, y), c in joint.items())
    return mi / h


def normalize(feats, mean, var, norm_vars=True):
    """(feats - mean) / (sqrt(var) + EPS) with norm_vars, else feats - mean; float32 out."""
    x = np.asarray(feats, dtype=np.float64) - mean
    if norm_vars:
        x = x / (np.sqrt(var) + EPS)
    return x.astype(np.float32)


def normalize_dump(feat_dir, utt2group, out_dir, group="spk", norm_vars=True, relevance=0.0):
    """Writes a copy of the dump ``feat_dir`` normalised per group of ``utt2group`` into ``out_dir``.

    Every utterance of ``utt2group`` must be in the dump (a clear error names the first one that
    is not). The copy's ``feats.yaml`` records the normalisation and the moments of the whole
    dump (key ``cmvn``). Returns {group: number of utterances}. The ark and scp are written to
    temporary names and renamed (genser.features.ArkWriter), so an interrupted run leaves no
    dump that looks complete.
    """
    from genser.features import ArkWriter, FeatureReader, back_to_matrix, check_finite, write_meta

    if group not in CMVN_GROUPS:
        raise ValueError(f"cmvn group must be one of {CMVN_GROUPS}, got {group!r}")
    if not relevance >= 0:
        raise ValueError(f"cmvn relevance must be >= 0, got {relevance}")
    reader = FeatureReader(feat_dir)
    missing = [u for u in sorted(utt2group) if u not in reader]
    if missing:
        raise ValueError(f"utterance {missing[0]} has no features in {reader.scp_path} "
                         f"({len(missing)} such utterances); rerun the feature stage")
    groups, everything = accumulate(reader, utt2group)
    stats = {g: m.mean_var(everything, relevance) for g, m in groups.items()}
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    meta = dict(reader.meta)
    with ArkWriter(out_dir / "feats.ark", out_dir / "feats.scp", dtype=meta.get("dtype", "float32")) as writer:
        for utt in sorted(utt2group):
            mean, var = stats[utt2group[utt]]
            x = normalize(reader[utt], mean, var, norm_vars)
            check_finite(utt, x, f"the normalised features of {reader.scp_path}")
            writer(utt, back_to_matrix(x, meta))
    all_mean, all_var = everything.mean_var()
    meta["cmvn"] = {"group": group, "norm_vars": bool(norm_vars), "relevance": float(relevance),
                    "source": str(feat_dir), "num_groups": len(groups),
                    "mean": all_mean.astype(np.float32).tolist(), "var": all_var.astype(np.float32).tolist()}
    meta["num_utts"] = len(utt2group)
    write_meta(out_dir, meta)
    sizes = {g: int(m.n) for g, m in sorted(groups.items())}
    log.info("%s: normalised %d utterances in %d groups (%s, norm_vars=%s, relevance %g) -> %s",
             feat_dir, len(utt2group), len(groups), group, norm_vars, relevance, out_dir)
    return sizes


def unit_stats(own, prior, relevance):
    """((mean, var), alone) of a unit of clips (Moments ``own``) shrunk towards ``prior`` by
    ``relevance``; at relevance 0 a lone clip's own moments would erase it, so it gets the prior's
    alone (``alone`` True)."""
    if relevance == 0 and own.n < 2:
        return prior.mean_var(), True
    return own.mean_var(prior, relevance), False


def normalize_unit(feats_list, cmvn):
    """The utterances of one speaker, a list of [T, L, D], normalised as the dump behind ``cmvn``
    (the ``cmvn`` entry of its feats.yaml, which a model's checkpoint keeps) was: with their own
    moments, shrunk towards the dump's by its relevance. This is how genser-infer treats new
    audio, one recording (or the files genser-infer --same_speaker groups) as one speaker.

    With relevance 0, a single utterance's own moments would erase it; it then gets the dump's
    moments alone (returned flag True, so the caller can say so).
    """
    if not feats_list:
        return [], False
    own = Moments()
    for f in feats_list:
        own.add(f)
    (mean, var), alone = unit_stats(own, Moments.of(cmvn["mean"], cmvn["var"]), float(cmvn["relevance"]))
    return [normalize(f, mean, var, cmvn["norm_vars"]) for f in feats_list], alone


# ----------------------------------------------------------------------------------------------
# Normalisation inside the model: per-speaker CMVN of training utterances, and the evaluation
# protocols that say which statistics of a test speaker a decision may use (docs/TRAINING.md,
# "Evaluation protocols").
#
# A model trained with --feat_norm speaker keeps the moments of its *training* utterances (the
# prior) and the relevance; a test clip is then normalised with the moments of a "unit" of clips
# of its speaker, shrunk towards that prior:
#   clip        the clip alone (inductive: no other statistics of the test speaker; what
#               genser-infer does on one file, and what published speaker-independent results use)
#   speaker-K   the clip and K-1 other unlabelled clips of its speaker, drawn at random
#   speaker-all every unlabelled clip of its speaker (transductive)
# A model without normalisation gives the same decisions under every protocol.

FEAT_NORMS = ("none", "speaker", "auto")


def protocol_k(protocol):
    """Clips per unit of a protocol name: 1 for clip, K for speaker-K, None for speaker-all."""
    if protocol == "clip":
        return 1
    if protocol == "speaker-all":
        return None
    head, _, k = str(protocol).partition("-")
    if head == "speaker" and k.isdigit() and int(k) >= 2:
        return int(k)
    raise ValueError(f"unknown evaluation protocol {protocol!r}: expected clip, speaker-<K> (K >= 2) or speaker-all")


def parse_protocols(text):
    """'clip speaker-3 speaker-all' -> the list, each checked; clip is required first (the headline)."""
    names = str(text).replace(",", " ").split()
    for name in names:
        protocol_k(name)
    if not names or names[0] != "clip":
        raise ValueError(f"protocols must start with clip (the headline protocol), got {text!r}")
    if len(set(names)) != len(names):
        raise ValueError(f"protocols repeated in {text!r}")
    return names


def parse_norm_k(text):
    """Training units: '1 3 all' -> [1, 3, None]; each training example is normalised, per epoch,
    with the moments of a unit of this many clips of its speaker (drawn uniformly from the list)."""
    out = []
    for item in str(text).replace(",", " ").split():
        if item == "all":
            out.append(None)
        elif item.isdigit() and int(item) >= 1:
            out.append(int(item))
        else:
            raise ValueError(f"norm_k: expected positive integers or 'all', got {item!r} in {text!r}")
    if not out:
        raise ValueError("norm_k is empty")
    return out


def utterance_moments(reader, keys):
    """{key: Moments of that utterance alone}; ``reader[key]`` is [T, L, D]. One pass, one
    utterance in memory at a time (frame dumps too)."""
    out = {}
    for key in keys:
        m = Moments()
        m.add(reader[key])
        out[key] = m
    return out


def pool(moments):
    """The Moments of several utterances together (each weighing one)."""
    total = Moments()
    for m in moments:
        total.n += m.n
        total.s1 = total.s1 + m.s1
        total.s2 = total.s2 + m.s2
    return total


def draw_unit(key, siblings, k, rng):
    """The unit of ``key`` among ``siblings`` (its speaker's keys, ``key`` included): ``key`` and
    k-1 others drawn without replacement (all of them when k is None or the speaker has fewer)."""
    others = [s for s in siblings if s != key]
    if k is None or k - 1 >= len(others):
        return [key, *others]
    picks = rng.choice(len(others), size=k - 1, replace=False) if k > 1 else []
    return [key, *(others[i] for i in sorted(picks))]


def key_rng(seed, key, epoch=0):
    """A generator for one utterance key at one epoch of a run, the same in every process
    (crc32, not hash(), which Python salts per process)."""
    return np.random.default_rng([int(seed), int(epoch), zlib.crc32(repr(key).encode())])


class SpeakerNorm:
    """Per-speaker CMVN of a set of utterances at one protocol or a mix of them.

    ``moments``: {key: Moments} of every utterance; ``key2spk``: {key: speaker}; ``prior``: the
    model's dict (norm_vars, relevance, mean, var). ``stats(key, k, seed, epoch)`` are the (mean,
    var) that normalise ``key`` within a unit of k clips of its speaker (None: all).
    """

    def __init__(self, moments, key2spk, prior):
        self.moments, self.key2spk, self.prior = moments, key2spk, prior
        self.prior_moments = Moments.of(prior["mean"], prior["var"])
        self.relevance = float(prior["relevance"])
        by_spk = collections.defaultdict(list)
        for key in moments:
            by_spk[key2spk[key]].append(key)
        self.siblings = {key: by_spk[key2spk[key]] for key in moments}
        self._all = {}  # speaker-all stats, one per speaker

    def stats(self, key, k, seed=0, epoch=0):
        spk = self.key2spk[key]
        if k is None and spk in self._all:
            return self._all[spk]
        unit = draw_unit(key, self.siblings[key], k, key_rng(seed, key, epoch))
        out, _ = unit_stats(pool(self.moments[u] for u in unit), self.prior_moments, self.relevance)
        if k is None:
            self._all[spk] = out
        return out

    def apply(self, key, feats, k, seed=0, epoch=0):
        mean, var = self.stats(key, k, seed, epoch)
        return normalize(feats, mean, var, self.prior["norm_vars"])


def choose_feat_norm(feat_norm, utt2spk, utt2label, max_dependence=AUTO_MAX_DEPENDENCE):
    """(kind, dependence): 'speaker' or 'none' for ``feat_norm`` none | speaker | auto, where auto
    normalises per speaker only when speaker and label are independent enough in the given
    (training) utterances (``label_dependence`` at most ``max_dependence``)."""
    if feat_norm not in FEAT_NORMS:
        raise ValueError(f"feat_norm must be one of {FEAT_NORMS}, got {feat_norm!r}")
    dep = label_dependence(utt2spk, utt2label)
    if feat_norm == "auto":
        return ("speaker" if dep <= max_dependence else "none"), dep
    return feat_norm, dep


def fit_prior(moments, relevance, norm_vars=True):
    """The model's normalisation entry from the Moments of its training utterances."""
    mean, var = pool(moments).mean_var()
    return {"kind": "speaker", "norm_vars": bool(norm_vars), "relevance": float(relevance),
            "mean": mean.astype(np.float32).tolist(), "var": var.astype(np.float32).tolist()}
