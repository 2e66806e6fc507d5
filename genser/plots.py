"""Figures: confusion matrix, steps ablation, reliability diagrams and the emotion timeline of a
long recording (PNG, no display needed).

Figures are drawn on a bare ``matplotlib.figure.Figure`` with the Agg canvas, so nothing touches
pyplot's global state or needs a display, and the PNG is written atomically.
"""
from collections import defaultdict
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from genser.fileio import atomic_open


def _save(fig, path):
    """Renders ``fig`` to ``path`` as PNG through a temp file + os.replace."""
    FigureCanvasAgg(fig)
    with atomic_open(Path(path), "wb") as f:
        fig.savefig(f, format="png", dpi=120, bbox_inches="tight")
    return Path(path)


def plot_confusion(cm, labels, path, title, normalize=True):
    """Writes a confusion-matrix PNG (rows = reference); ``normalize`` shows row percentages.

    Cells are annotated with the percentage (normalized) and the count; rows of a class absent
    from the reference stay at 0.
    """
    cm = np.asarray(cm)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1] or cm.shape[0] != len(labels):
        raise ValueError(f"{path}: confusion matrix of shape {cm.shape} does not match "
                         f"{len(labels)} labels")
    support = cm.sum(axis=1, keepdims=True)
    shown = np.divide(100.0 * cm, support, out=np.zeros(cm.shape), where=support > 0) if normalize else cm
    k = len(labels)
    fig = Figure(figsize=(1.0 + 0.8 * k, 0.8 + 0.8 * k))
    ax = fig.add_subplot()
    image = ax.imshow(shown, cmap="Blues", vmin=0, vmax=100 if normalize else max(1, cm.max()))
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="% of reference" if normalize else "count")
    threshold = (100 if normalize else max(1, cm.max())) / 2
    for i in range(k):
        for j in range(k):
            text = f"{shown[i, j]:.1f}\n({cm[i, j]})" if normalize else f"{cm[i, j]}"
            ax.text(j, i, text, ha="center", va="center", fontsize=8,
                    color="white" if shown[i, j] > threshold else "black")
    ax.set_xticks(range(k), labels, rotation=45, ha="right")
    ax.set_yticks(range(k), labels)
    ax.set_xlabel("hypothesis")
    ax.set_ylabel("reference")
    ax.set_title(title)
    return _save(fig, path)


def plot_steps_ablation(rows, path, title="Steps ablation"):
    """Writes UA (%) vs number of sampling steps, one line per (system, eta).

    ``rows``: dicts with ``system``, ``nsteps`` (int, or None for a reference system such as the
    classifier, drawn as a horizontal line), ``eta`` (float or None), ``ua`` (fraction) and
    optionally ``ua_std`` (fraction, drawn as error bars).
    """
    lines, references = defaultdict(list), []
    for row in rows:
        if row.get("nsteps") is None:
            references.append(row)
        else:
            lines[(row["system"], row.get("eta"))].append(row)
    if not lines:
        raise ValueError(f"{path}: no row with nsteps to plot")
    fig = Figure(figsize=(6, 4))
    ax = fig.add_subplot()
    for (system, eta), points in sorted(lines.items(), key=lambda kv: (kv[0][0], kv[0][1] or 0.0)):
        points = sorted(points, key=lambda r: r["nsteps"])
        x = [r["nsteps"] for r in points]
        y = [100 * r["ua"] for r in points]
        err = [100 * (r.get("ua_std") or 0.0) for r in points]
        ax.errorbar(x, y, yerr=err if any(err) else None, marker="o", capsize=3, label=f"{system} eta={eta}")
    for i, row in enumerate(references):
        ax.axhline(100 * row["ua"], linestyle="--", color=f"C{(len(lines) + i) % 10}",
                   label=f"{row['system']} (reference)")
    steps = sorted({r["nsteps"] for pts in lines.values() for r in pts})
    ax.set_xticks(steps)
    ax.set_xlabel("sampling steps (nsteps)")
    ax.set_ylabel("UA (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_matrices(panels, rows, cols, path, title, marked=()):
    """Writes train x test heat maps side by side, one panel per system (UA in %).

    ``panels``: list of (name, {(row, col): fraction or None}); ``marked``: the (row, col)
    cells to flag (in-corpus cells), drawn with a "*" and a frame.  Missing cells stay blank.
    """
    if not panels or not rows or not cols:
        raise ValueError(f"{path}: nothing to plot")
    fig = Figure(figsize=(0.5 + (1.6 + 1.1 * len(cols)) * len(panels), 1.2 + 0.7 * len(rows)))
    for p, (name, values) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), p + 1)
        grid = np.full((len(rows), len(cols)), np.nan)
        for i, row in enumerate(rows):
            for j, col in enumerate(cols):
                if values.get((row, col)) is not None:
                    grid[i, j] = 100.0 * values[row, col]
        image = ax.imshow(grid, cmap="viridis", vmin=0, vmax=100)
        for i, row in enumerate(rows):
            for j, col in enumerate(cols):
                if np.isnan(grid[i, j]):
                    continue
                mark = "*" if (row, col) in marked else ""
                ax.text(j, i, f"{grid[i, j]:.1f}{mark}", ha="center", va="center", fontsize=9,
                        color="black" if grid[i, j] > 60 else "white")
                if mark:
                    ax.add_patch(_frame(i, j))
        ax.set_xticks(range(len(cols)), cols)
        ax.set_yticks(range(len(rows)), rows)
        ax.set_xlabel("test corpus")
        if p == 0:
            ax.set_ylabel("training corpora")
        ax.set_title(name, fontsize=10)
        fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="UA (%)")
    fig.suptitle(title, fontsize=10, y=1.05)  # above the panel titles (bbox_inches="tight" keeps it)
    return _save(fig, path)


def plot_reliability(panels, path, title="Reliability"):
    """Writes reliability diagrams side by side: accuracy vs mean confidence per bin.

    ``panels``: list of (name, bins, ece) with ``bins`` from ``genser.calibration.reliability``;
    bar width is the bin, the diagonal is perfect calibration, the bin counts are printed.
    """
    if not panels:
        raise ValueError(f"{path}: nothing to plot")
    fig = Figure(figsize=(3.2 * len(panels), 3.4))
    for p, (name, bins, ece) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), p + 1)
        full = [b for b in bins if b["count"]]
        ax.bar([b["lo"] for b in full], [b["acc"] for b in full], width=[b["hi"] - b["lo"] for b in full],
               align="edge", edgecolor="black", color="C0", alpha=0.8, label="accuracy")
        ax.bar([b["lo"] for b in full], [b["conf"] - b["acc"] for b in full], bottom=[b["acc"] for b in full],
               width=[b["hi"] - b["lo"] for b in full], align="edge", color="C3", alpha=0.3, label="gap")
        for b in full:
            ax.text((b["lo"] + b["hi"]) / 2, 0.02, str(b["count"]), ha="center", fontsize=6, rotation=90)
        ax.plot([0, 1], [0, 1], "k--", linewidth=1)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_xlabel("confidence")
        if p == 0:
            ax.set_ylabel("accuracy")
            ax.legend(fontsize=7, loc="upper left")
        ax.set_title(f"{name}\nECE {100 * ece:.1f}%", fontsize=9)
    fig.suptitle(title, fontsize=10, y=1.04)
    return _save(fig, path)


def plot_timeline(envelope, frame_s, segments, labels, path, title=""):
    """Writes the emotion track of a long recording over its waveform.

    ``envelope``: the peak |sample| per frame of ``frame_s`` seconds (the waveform at plotting
    resolution, whatever the length); ``segments``: dicts with ``start``, ``end``, ``label`` and
    ``scores`` ({label: posterior}). Top: the waveform with each segment shaded in its label's
    colour; bottom: every label's posterior per segment as steps.
    """
    envelope = np.asarray(envelope, dtype=np.float64)
    t = np.arange(len(envelope)) * frame_s
    colours = {label: f"C{i % 10}" for i, label in enumerate(labels)}
    fig = Figure(figsize=(10, 4.5))
    wave, track = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [1, 1.2]})
    wave.fill_between(t, -envelope, envelope, color="0.4", linewidth=0)
    for seg in segments:
        wave.axvspan(seg["start"], seg["end"], color=colours.get(seg["label"], "0.8"), alpha=0.3, linewidth=0)
        wave.text((seg["start"] + seg["end"]) / 2, 0.9, seg["label"], ha="center", va="top", fontsize=6,
                  rotation=90 if seg["end"] - seg["start"] < 0.08 * max(len(t) * frame_s, 1.0) else 0)
    wave.set_ylim(-1, 1)
    wave.set_ylabel("waveform")
    wave.set_title(title or f"{len(segments)} segments", fontsize=10)
    for label in labels:
        xs, ys = [], []
        for seg in segments:
            xs += [seg["start"], seg["end"], np.nan]
            ys += [seg["scores"][label]] * 2 + [np.nan]
        track.plot(xs, ys, color=colours[label], linewidth=2, label=label)
    track.set_ylim(0, 1.02)
    track.set_ylabel("posterior")
    track.set_xlabel("time (s)")
    track.legend(fontsize=7, ncol=min(len(labels), 7), loc="upper center", bbox_to_anchor=(0.5, -0.3))
    if len(t):
        track.set_xlim(0, t[-1] + frame_s)
    return _save(fig, path)


def _frame(i, j):
    from matplotlib.patches import Rectangle

    return Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="red", linewidth=1.5)
