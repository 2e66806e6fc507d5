"""Audio reading for data dirs: soundfile I/O, down-mixing and resampling to a target rate."""
import io
import logging
import math
import os
import struct
import subprocess
from collections import Counter
from fractions import Fraction

import numpy as np
import soundfile as sf
import torch

logger = logging.getLogger(__name__)


class AudioError(Exception):
    """Audio that cannot be used; the message names the utterance id and the path."""


class AudioReader:
    """Reads utterances as mono float32 tensors at ``target_sr``.

    ``reader(utt, path, start=None, end=None)`` returns a 1-D FloatTensor in [-1, 1].  ``start``
    and ``end`` are seconds (Kaldi ``segments``).  ``path`` may also be a Kaldi pipe
    (``"cmd ... |"``) writing a wav to stdout.  Each kind of conversion (resampling from a
    given rate, down-mixing) is logged once per reader and counted in ``conversions``.

    Suspect audio is logged as a warning per utterance, naming it and the file, and counted:
    ``short`` (under ``min_duration`` seconds), ``silent`` (digital silence: every sample is 0,
    where log-mel features such as fbank degenerate to about -9537) and ``clipped`` (a real share
    of the samples at full scale, see ``is_clipped``). 0 samples raise AudioError.
    """

    def __init__(self, target_sr=16000, min_duration=0.1):
        if int(target_sr) <= 0:
            raise ValueError(f"target_sr must be positive, got {target_sr}")
        if float(min_duration) < 0:
            raise ValueError(f"min_duration must be >= 0, got {min_duration}")
        self.target_sr = int(target_sr)
        self.min_duration = float(min_duration)
        self.conversions = Counter()
        self.suspects = []  # (utt, kind, where) of each short, silent or clipped clip, in reading order
        self._resamplers = {}

    def __call__(self, utt, path, start=None, end=None):
        data, sr = self._read(utt, path, start, end)
        where = f"{path}" + (f" [{start}, {end}]" if start is not None else "")
        if data.ndim != 2 or data.shape[0] == 0:
            raise AudioError(f"utt {utt}: empty audio (0 samples) in {where}")
        if not np.isfinite(data).all():
            raise AudioError(f"utt {utt}: non-finite samples in {path}")
        self._check_content(utt, where, data, sr)
        if data.shape[1] > 1:
            self._note(f"downmix {data.shape[1]}ch", f"down-mixing {data.shape[1]}-channel audio to "
                       f"mono (first: utt {utt}, {path})")
            data = data.mean(axis=1, keepdims=True)
        wav = torch.from_numpy(np.ascontiguousarray(data[:, 0], dtype=np.float32))
        if sr != self.target_sr:
            self._note(f"resample {sr}", f"resampling {sr} Hz -> {self.target_sr} Hz (first: utt "
                       f"{utt}, {path})")
            wav = self._resample(wav, sr)
        # Resampling a full-scale peak overshoots [-1, 1] a little (Gibbs): that is not clipping
        # in the recording (is_clipped judges the samples as read), so the clamp is only counted.
        peak = float(wav.abs().max()) if wav.numel() else 0.0
        if peak > 1.0:
            self.conversions["clamp"] += 1
            logger.debug("utt %s: clamping samples outside [-1, 1] after conversion (peak %.3f), %s", utt,
                         peak, path)
            wav = wav.clamp_(-1.0, 1.0)
        return wav

    def _check_content(self, utt, where, data, sr):
        """Warns about short, silent and clipped audio (naming ``utt`` and the file)."""
        seconds = data.shape[0] / sr
        if seconds < self.min_duration:
            self.conversions["short"] += 1
            self.suspects.append((utt, "short", where))
            logger.warning("utt %s: %.3f s of audio (%d samples) in %s is shorter than the minimum %.3g s; "
                           "its features are mostly padding", utt, seconds, data.shape[0], where,
                           self.min_duration)
        peak = float(np.abs(data).max())
        if peak == 0.0:
            self.conversions["silent"] += 1
            self.suspects.append((utt, "silent", where))
            logger.warning("utt %s: digital silence (all %d samples are 0) in %s; log-mel features of "
                           "silence degenerate (fbank gives about -9537)", utt, data.shape[0], where)
            return
        clipped = is_clipped(data)
        if clipped:
            self.conversions["clipped"] += 1
            self.suspects.append((utt, "clipped", where))
            count, run = clipped
            logger.warning("utt %s: clipped audio in %s: %d of %d samples (%.2f%%) at full scale, up to %d "
                           "in a row", utt, where, count, data.size, 100.0 * count / data.size, run)

    def _note(self, kind, message):
        if self.conversions[kind] == 0:
            logger.info(message)
        self.conversions[kind] += 1

    def _read(self, utt, path, start, end):
        src = str(path)
        try:
            if src.rstrip().endswith("|"):
                src = io.BytesIO(_run_pipe(utt, src))
            else:
                check_wav_complete(utt, src)
            info = sf.info(src)
            if isinstance(src, io.BytesIO):
                src.seek(0)
            sr = int(info.samplerate)
            first = 0 if start is None else int(round(float(start) * sr))
            last = None if end is None or float(end) < 0 else int(round(float(end) * sr))
            if first < 0 or (last is not None and last < first):
                raise AudioError(f"utt {utt}: bad segment [{start}, {end}] for {path}")
            if first > info.frames:
                raise AudioError(f"utt {utt}: segment start {start} s is past the end "
                                 f"({info.frames / sr:.3f} s) of {path}")
            data, sr = sf.read(src, start=first, stop=last, dtype="float32", always_2d=True)
        except AudioError:
            raise
        except FileNotFoundError as exc:
            raise AudioError(f"utt {utt}: audio file not found: {path}") from exc
        except (sf.LibsndfileError, RuntimeError, OSError, ValueError, TypeError) as exc:
            if isinstance(src, str) and not os.path.exists(src):
                raise AudioError(f"utt {utt}: audio file not found: {path}") from exc
            raise AudioError(f"utt {utt}: cannot read audio {path}: {exc}") from exc
        return data, int(sr)

    def _resample(self, wav, sr):
        from genser.compat import import_torchaudio

        key = int(sr)
        if key not in self._resamplers:
            ta = import_torchaudio()
            self._resamplers[key] = ta.transforms.Resample(key, self.target_sr)
        with torch.no_grad():
            return self._resamplers[key](wav.unsqueeze(0)).squeeze(0).contiguous()

    def info(self, utt, path):
        """(sample rate, frames, channels) of a seekable file, without reading its samples."""
        if str(path).rstrip().endswith("|"):
            raise AudioError(f"utt {utt}: {path} is a pipe; a long recording is read in blocks and needs a "
                             f"seekable file (write the pipe's output to a file first)")
        try:
            check_wav_complete(utt, str(path))
            info = sf.info(str(path))
        except AudioError:
            raise
        except FileNotFoundError as exc:
            raise AudioError(f"utt {utt}: audio file not found: {path}") from exc
        except (sf.LibsndfileError, RuntimeError, OSError, ValueError, TypeError) as exc:
            if not os.path.exists(str(path)):
                raise AudioError(f"utt {utt}: audio file not found: {path}") from exc
            raise AudioError(f"utt {utt}: cannot read audio {path}: {exc}") from exc
        if info.frames <= 0:
            raise AudioError(f"utt {utt}: empty audio (0 samples) in {path}")
        return int(info.samplerate), int(info.frames), int(info.channels)

    def stream(self, utt, path, block_seconds=30.0):
        """Yields the recording as consecutive mono blocks at ``target_sr`` (1-D FloatTensors).

        Memory is bounded by ``block_seconds`` whatever the file's length. The blocks join into
        the samples of resampling the whole file at once (up to float rounding): every cut falls
        on a whole period of the rate ratio, so the filter phases match the one-shot resampler,
        and the samples near a cut are held back until the next block gives their right context
        (``ctx`` input samples of context, more than the sinc filter reaches).
        """
        sr, _, _ = self.info(utt, path)
        g = math.gcd(sr, self.target_sr)
        period_in, period_out = sr // g, self.target_sr // g
        ctx = period_in * max(1, math.ceil(64 / period_in))
        ctx_out = ctx // period_in * period_out
        block = max(2 * ctx, int(block_seconds * sr) // period_in * period_in)
        tail, skip = torch.zeros(0), 0  # not yet emitted input (aligned start); its outputs already out
        try:
            for data in sf.blocks(str(path), blocksize=block, dtype="float32", always_2d=True):
                if not np.isfinite(data).all():
                    raise AudioError(f"utt {utt}: non-finite samples in {path}")
                mono = torch.from_numpy(np.ascontiguousarray(data.mean(axis=1), dtype=np.float32))
                if sr == self.target_sr:
                    yield mono.clamp_(-1.0, 1.0)
                    continue
                buf = torch.cat([tail, mono])
                held = (buf.numel() - ctx) // period_in * period_in  # first held-back sample
                if held - ctx < 0 or held // period_in * period_out <= skip:
                    tail = buf  # too short to cut yet
                    continue
                yield self._resample(buf, sr)[skip:held // period_in * period_out].clamp_(-1.0, 1.0)
                tail, skip = buf[held - ctx:], ctx_out
        except (sf.LibsndfileError, RuntimeError) as exc:
            raise AudioError(f"utt {utt}: cannot read audio {path}: {exc}") from exc
        if tail.numel():
            yield self._resample(tail, sr)[skip:].clamp_(-1.0, 1.0)


def wav_shortfall(path):
    """(declared, present) bytes of the data chunk of a RIFF/WAVE file that holds fewer bytes than
    its header declares (a copy or download cut short), else None; None for other formats.

    libsndfile reads such a file silently as the frames that are there, so the check is ours. A
    data size of 0 or 0xFFFFFFFF means "unknown" (a header written to a pipe) and is not judged.
    """
    with open(path, "rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return None
        size = os.fstat(f.fileno()).st_size
        pos = 12
        while pos + 8 <= size:
            f.seek(pos)
            chunk, length = struct.unpack("<4sI", f.read(8))
            if chunk == b"data":
                present = size - pos - 8
                if length in (0, 0xFFFFFFFF) or present >= length:
                    return None
                return length, present
            pos += 8 + length + (length & 1)  # chunks are padded to an even size
    return None


def check_wav_complete(utt, path):
    """Raises AudioError (naming ``utt`` and ``path``) for a WAV file cut short (``wav_shortfall``)."""
    short = wav_shortfall(path)
    if short:
        declared, present = short
        raise AudioError(f"utt {utt}: truncated WAV file {path}: its header declares {declared} bytes of "
                         f"audio, the file holds {present} ({100.0 * present / declared:.1f}%); copy it again")


# Speed perturbation (Ko et al., Interspeech 2015; Kaldi's and ESPnet's "sox speed"): factors
# outside this range distort speech beyond what the field uses (0.9, 1.0, 1.1 is the convention).
SPEED_RANGE = (0.5, 2.0)


def speed_ratio(factor):
    """(p, q) with factor = p / q in lowest terms (denominator <= 100), validated."""
    factor = float(factor)
    if not SPEED_RANGE[0] <= factor <= SPEED_RANGE[1]:
        raise ValueError(f"speed factor must lie in [{SPEED_RANGE[0]}, {SPEED_RANGE[1]}], got {factor}")
    frac = Fraction(factor).limit_denominator(100)
    return frac.numerator, frac.denominator


_SPEED_RESAMPLERS = {}  # (p, q) -> Resample: one kernel per factor and process


def speed_perturb(wav, factor):
    """``wav`` [N] played ``factor`` times faster: tempo and pitch both scale by ``factor``.

    As sox's ``speed`` effect: resample by q/p and keep the sample rate, so the result has about
    N / factor samples (0.9 gives a longer, lower utterance). factor 1 returns ``wav`` itself.
    """
    p, q = speed_ratio(factor)
    if p == q:
        return wav
    from genser.compat import import_torchaudio

    if (p, q) not in _SPEED_RESAMPLERS:
        _SPEED_RESAMPLERS[p, q] = import_torchaudio().transforms.Resample(p, q)
    with torch.no_grad():
        return _SPEED_RESAMPLERS[p, q](wav.unsqueeze(0)).squeeze(0).contiguous()


# |x| at or above this is full scale: 32767/32768 is the largest positive 16-bit sample.
FULL_SCALE = 1.0 - 2.0 ** -15
# Clipped: at least this share of the samples at full scale, or this many in a row. A file
# normalised to peak 1.0 has one or two full-scale samples and is not clipped.
CLIP_SHARE = 0.001
CLIP_RUN = 3


def is_clipped(data):
    """(full-scale samples, longest run) when ``data`` [S, C] looks clipped, else None."""
    full = np.abs(data) >= FULL_SCALE
    count = int(full.sum())
    if count < CLIP_RUN:
        return None
    run = 0
    for ch in full.T:  # longest run of consecutive full-scale samples in any channel
        edges = np.flatnonzero(np.diff(np.concatenate(([0], ch.astype(np.int8), [0]))))
        if edges.size:
            run = max(run, int((edges[1::2] - edges[::2]).max()))
    if run >= CLIP_RUN or count >= CLIP_SHARE * full.size:
        return count, run
    return None


def _run_pipe(utt, command):
    """Runs a Kaldi wav.scp pipe ("sox x.flac -t wav - |") and returns its stdout."""
    cmd = command.rstrip()[:-1]
    proc = subprocess.run(cmd, shell=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          check=False)
    if proc.returncode != 0:
        err = proc.stderr.decode(errors="replace").strip()[-500:]
        raise AudioError(f"utt {utt}: pipe command failed (exit {proc.returncode}): {command}: {err}")
    return proc.stdout


def write_wav(path, wav, sr, subtype="PCM_16"):
    """Writes a 1-D float array/tensor in [-1, 1] as a wav file, atomically."""
    from genser.fileio import atomic_open

    if isinstance(wav, torch.Tensor):
        wav = wav.detach().cpu().numpy()
    wav = np.asarray(wav)
    with atomic_open(path, "wb") as f:
        sf.write(f, wav, int(sr), subtype=subtype, format="WAV")
