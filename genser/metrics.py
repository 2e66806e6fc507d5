"""Classification metrics of speech emotion recognition (pure numpy).

Conventions (the ones SER papers report, e.g. IEMOCAP "UA/WA"):

- ``ref`` and ``hyp`` are 1-D sequences of class indices in ``[0, num_classes)``.
- Confusion matrix rows are the reference class, columns the hypothesis.
- UA (unweighted accuracy) = mean per-class recall over the classes **present in ref**; a class
  with no reference utterance has no recall and is left out (it cannot be "missed").
- WA (weighted accuracy) = plain accuracy, i.e. per-class recall weighted by class support.
- Per-class F1 = 2 TP / (2 TP + FP + FN), which equals 2 P R / (P + R) and is well defined for
  every class present in ref or in hyp.
- macro-F1 = mean F1 over the classes present in ref **or** hyp; a class absent from both is
  excluded.  This is scikit-learn's ``f1_score(average="macro")`` with its default
  ``labels=None`` (labels = union of classes seen in y_true and y_pred); a class predicted but
  never in ref counts with F1 = 0, and so does a class in ref never predicted.
- weighted-F1 = per-class F1 weighted by reference support (scikit-learn's
  ``average="weighted"``); classes absent from ref have weight 0.

All metrics are fractions in [0, 1].  Empty input raises ValueError: none of them is defined
without at least one utterance.
"""
import numpy as np


def _as_index_array(x, name, num_classes):
    """Validates a 1-D array of class indices in [0, num_classes) and returns it as int64."""
    arr = np.asarray(x)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    if arr.size == 0:
        return arr.astype(np.int64)
    if arr.dtype.kind not in "iu":
        raise ValueError(f"{name} must hold integer class indices, got dtype {arr.dtype}")
    bad = (arr < 0) | (arr >= num_classes)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"{name}[{i}] = {arr[i]} is outside [0, {num_classes})")
    return arr.astype(np.int64)


def confusion_matrix(ref, hyp, num_classes):
    """Counts [K, K] int64 matrix; entry (i, j) = utterances of reference i predicted as j."""
    if int(num_classes) != num_classes or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
    num_classes = int(num_classes)
    ref = _as_index_array(ref, "ref", num_classes)
    hyp = _as_index_array(hyp, "hyp", num_classes)
    if ref.shape != hyp.shape:
        raise ValueError(f"ref and hyp differ in length: {ref.size} vs {hyp.size}")
    # Encode each (ref, hyp) pair as one flat index, then count: a K*K histogram.
    flat = np.bincount(ref * num_classes + hyp, minlength=num_classes * num_classes)
    return flat.reshape(num_classes, num_classes)


def _cm(ref, hyp, num_classes):
    """Confusion matrix of non-empty input (every metric below needs at least one utterance)."""
    cm = confusion_matrix(ref, hyp, num_classes)
    if cm.sum() == 0:
        raise ValueError("no utterances to score (ref and hyp are empty)")
    return cm


def per_class_f1(cm):
    """Per-class F1 = 2TP / (2TP + FP + FN) from a confusion matrix; NaN where the class is
    absent from both ref and hyp (the ratio is 0/0)."""
    cm = np.asarray(cm, dtype=np.float64)
    tp = np.diag(cm)
    denom = cm.sum(axis=0) + cm.sum(axis=1)  # = 2TP + FP + FN
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, 2 * tp / denom, np.nan)


def summarize(ref, hyp, num_classes):
    """All metrics at once: dict(ua, wa, macro_f1, weighted_f1, n) (fractions, n = #utterances)."""
    return summarize_confusion(_cm(ref, hyp, num_classes))


def summarize_confusion(cm):
    """Same dict as :func:`summarize`, from a non-empty confusion matrix (rows = reference)."""
    cm = np.asarray(cm)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1] or cm.sum() <= 0 or (cm < 0).any():
        raise ValueError(f"expected a square non-negative confusion matrix with counts, got shape "
                         f"{cm.shape} and total {cm.sum()}")
    return {"ua": _ua(cm), "wa": _wa(cm), "macro_f1": _macro_f1(cm),
            "weighted_f1": _weighted_f1(cm), "n": int(cm.sum())}


def _ua(cm):
    support = cm.sum(axis=1)
    present = support > 0
    return float(np.mean(np.diag(cm)[present] / support[present]))


def _wa(cm):
    return float(np.trace(cm) / cm.sum())


def _macro_f1(cm):
    f1 = per_class_f1(cm)
    return float(np.mean(f1[~np.isnan(f1)]))


def _weighted_f1(cm):
    support = cm.sum(axis=1)
    f1 = np.nan_to_num(per_class_f1(cm))  # NaN only where the support is 0 anyway
    return float(np.sum(f1 * support) / support.sum())
