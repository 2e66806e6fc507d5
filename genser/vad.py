"""Splitting long recordings into segments: the Silero voice-activity detector, run offline from
the model file its PyPI package ships, and fixed windows (docs/METHOD.md §7).

``SileroVAD`` turns 16 kHz audio, fed block by block, into one speech probability per 32 ms
frame, keeping its recurrent state across blocks, so a recording of any length costs memory
in proportion to its number of frames (4 bytes each), not its samples. ``speech_regions`` and
``fixed_windows`` are pure functions from frame probabilities or a duration to (start, end)
seconds.
"""
import importlib.util
import math
import warnings
from pathlib import Path

import numpy as np
import torch

__all__ = ["VADError", "SILERO_RATE", "SILERO_FRAME", "silero_model_path", "SileroVAD", "speech_regions",
           "fixed_windows"]

SILERO_RATE = 16000
SILERO_FRAME = 512  # samples per decision at 16 kHz (32 ms): the only size the model accepts


class VADError(RuntimeError):
    """The voice-activity detector cannot be loaded (package missing, file missing)."""


def silero_model_path():
    """The TorchScript file inside the installed ``silero-vad`` package (never downloaded).

    Only the package's location is looked up; the package itself is not imported (its helpers
    pull optional audio libraries that genser does not need).
    """
    spec = importlib.util.find_spec("silero_vad")
    if spec is None or not spec.submodule_search_locations:
        raise VADError("the voice-activity detector needs the silero-vad package: "
                       "pip install -c tools/constraints.txt silero-vad (tools/install.sh installs it)")
    for folder in spec.submodule_search_locations:
        path = Path(folder) / "data" / "silero_vad.jit"
        if path.is_file():
            return path
    raise VADError(f"silero-vad is installed in {list(spec.submodule_search_locations)} but its model file "
                   f"data/silero_vad.jit is missing; reinstall it")


class SileroVAD:
    """Streaming frame-level speech probabilities from the Silero VAD TorchScript model.

    ``vad.reset()`` starts a recording; ``vad(block)`` takes the next 1-D 16 kHz block (any
    length: a remainder shorter than a frame is kept for the next call) and returns the
    probabilities of the frames it completed; ``vad.flush()`` zero-pads and scores the last
    partial frame.
    """

    def __init__(self, path=None):
        path = Path(path) if path is not None else silero_model_path()
        # A TorchScript archive shipped by an installed package (code and weights of that
        # package, like any module it imports); it is not a pickle from a model.pt.
        try:
            with warnings.catch_warnings():  # torch >= 2.9 marks TorchScript deprecated; it still loads
                warnings.simplefilter("ignore", DeprecationWarning)
                self.model = torch.jit.load(str(path), map_location="cpu").eval()
        except (RuntimeError, OSError, ValueError) as exc:
            raise VADError(f"cannot load the Silero VAD model {path}: {exc}") from exc
        self.path = path
        self.reset()

    def reset(self):
        self.model.reset_states()
        self._rest = torch.zeros(0)

    @torch.no_grad()
    def __call__(self, block):
        block = torch.cat([self._rest, torch.as_tensor(block, dtype=torch.float32).reshape(-1)])
        n = block.numel() // SILERO_FRAME
        self._rest = block[n * SILERO_FRAME:]
        frames = block[:n * SILERO_FRAME].reshape(n, SILERO_FRAME)
        # the model is recurrent: frames go in one at a time, in order
        return np.array([float(self.model(frame[None], SILERO_RATE)) for frame in frames], dtype=np.float32)

    def flush(self):
        if self._rest.numel() == 0:
            return np.zeros(0, dtype=np.float32)
        last = torch.nn.functional.pad(self._rest, (0, SILERO_FRAME - self._rest.numel()))
        self._rest = torch.zeros(0)
        return self(last)


def _runs(mask):
    """(first, last + 1) index pairs of the runs of True in a 1-D boolean array."""
    edges = np.flatnonzero(np.diff(np.concatenate(([0], mask.astype(np.int8), [0]))))
    return list(zip(edges[::2].tolist(), edges[1::2].tolist()))


def speech_regions(probs, frame_s, duration, *, threshold=0.5, neg_threshold=None, min_speech=0.25,
                   min_silence=0.5, pad=0.1, max_segment=20.0):
    """Speech regions [(start, end)] in seconds from frame probabilities ``probs`` [F].

    Hysteresis: speech starts at a frame >= ``threshold`` and lasts while frames stay >=
    ``neg_threshold`` (default threshold - 0.15). Pauses shorter than ``min_silence`` s are
    bridged (a sentence with pauses between words stays one segment), regions shorter than
    ``min_speech`` s dropped, each side padded by ``pad`` s (clipped to [0, duration] and to the
    middle of the gap to the neighbour), and regions longer than ``max_segment`` s cut into equal
    parts, so that no segment loads more than that into the frontend.
    """
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 1:
        raise ValueError(f"probs must be 1-D, got shape {probs.shape}")
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"threshold must lie in (0, 1), got {threshold}")
    neg = max(threshold - 0.15, 0.01) if neg_threshold is None else float(neg_threshold)
    if not 0.0 < neg <= threshold:
        raise ValueError(f"neg_threshold must lie in (0, threshold], got {neg}")
    if min(frame_s, max_segment) <= 0 or min(min_speech, min_silence, pad) < 0:
        raise ValueError("frame_s and max_segment must be positive; min_speech, min_silence and pad >= 0")
    # hysteresis: a run of frames above neg counts when it holds at least one frame above threshold
    regions = [(a, b) for a, b in _runs(probs >= neg) if (probs[a:b] >= threshold).any()]
    merged = []
    for a, b in regions:
        if merged and (a - merged[-1][1]) * frame_s < min_silence:
            merged[-1] = (merged[-1][0], b)
        else:
            merged.append((a, b))
    spans = [(a * frame_s, min(b * frame_s, duration)) for a, b in merged if (b - a) * frame_s >= min_speech]
    out = []
    for i, (start, end) in enumerate(spans):
        lo = 0.0 if i == 0 else (spans[i - 1][1] + start) / 2
        hi = duration if i == len(spans) - 1 else (end + spans[i + 1][0]) / 2
        start, end = max(lo, start - pad), min(hi, end + pad)
        parts = max(1, math.ceil((end - start) / max_segment - 1e-9))
        step = (end - start) / parts
        out.extend((start + k * step, start + (k + 1) * step) for k in range(parts))
    return out


def fixed_windows(duration, window, hop):
    """Windows [(start, end)] of ``window`` s every ``hop`` s over [0, duration]; the last one ends
    at the recording's end (shorter when the recording is), and none starts after it."""
    if window <= 0 or hop <= 0:
        raise ValueError(f"window and hop must be positive, got {window} and {hop}")
    if duration <= 0:
        return []
    out = []
    for k in range(math.ceil(duration / hop) + 1):
        start = k * hop  # not a running sum: no drift over an hour of windows
        end = min(start + window, duration)
        out.append((start, end))
        if end >= duration:
            break
    return out
