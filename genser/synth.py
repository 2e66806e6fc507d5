"""Procedural emotional speech: a small labelled corpus that needs no download.

Source-filter synthesis (Fant 1960): a Rosenberg (1971) glottal pulse train, with jitter and
shimmer, plus aspiration noise, is shaped frame by frame by a formant (vocal-tract) envelope
that follows a vowel sequence; fricative noise marks consonants between syllables.  Speakers
differ in F0 range and vocal-tract length (formant scaling, Peterson & Barney 1952) and in
voice quality.  Emotions follow the usual prosodic profiles (Scherer 2003; Banse & Scherer
1996): F0 level, range and contour, speaking rate, intensity, spectral tilt, jitter/shimmer
and breathiness.  Every utterance draws its own expressiveness and nuisance variation, so the
classes overlap.  Background noise is added at a random SNR.

Everything is driven by ``numpy.random.Generator``s derived from one seed: the same seed
gives the same corpus, byte for byte.
"""
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from genser.datadir import GENDERS

logger = logging.getLogger(__name__)

EMOTIONS = ("neutral", "happy", "angry", "sad")

# Vowel formants (F1, F2, F3, F4) in Hz of an adult male voice (after Peterson & Barney 1952).
VOWELS = np.array([
    [730, 1090, 2440, 3400],  # a
    [530, 1840, 2480, 3500],  # e
    [270, 2290, 3010, 3700],  # i
    [570, 840, 2410, 3300],   # o
    [300, 870, 2240, 3300],   # u
    [660, 1720, 2410, 3400],  # ae
], dtype=np.float64)
BANDWIDTHS = np.array([80.0, 100.0, 140.0, 200.0])

# Emotion profiles as offsets from neutral (Scherer 2003, table 1 directions):
#   f0: level change (semitones), range: F0 excursion factor, rate: syllable-rate factor,
#   gain: level (dB), tilt: spectral slope change (dB/octave, + = brighter), oq: glottal open
#   quotient change (+ = breathier, softer closure), jitter/shimmer: relative period/amplitude
#   perturbation, breath: aspiration noise level (relative), rise: final F0 rise (semitones).
PROFILES = {
    "neutral": dict(f0=0.0, range=1.0, rate=1.00, gain=0.0, tilt=0.0, oq=0.00, jitter=0.006,
                    shimmer=0.04, breath=0.03, rise=-1.0),
    "happy": dict(f0=4.0, range=2.0, rate=1.10, gain=2.5, tilt=1.0, oq=-0.03, jitter=0.010,
                  shimmer=0.05, breath=0.03, rise=1.5),
    "angry": dict(f0=2.0, range=1.3, rate=1.12, gain=6.0, tilt=4.0, oq=-0.12, jitter=0.016,
                  shimmer=0.09, breath=0.02, rise=-2.0),
    "sad": dict(f0=-1.5, range=0.55, rate=0.82, gain=-4.0, tilt=-2.5, oq=0.10, jitter=0.010,
                shimmer=0.06, breath=0.10, rise=-2.5),
}


@dataclass
class Speaker:
    """Per-speaker voice parameters."""

    spk: str
    gender: str
    f0: float  # mean F0 (Hz)
    f0_range: float  # typical excursion (semitones)
    formant_scale: float  # vocal-tract length factor (formants multiplied by it)
    tilt: float  # voice-quality tilt offset (dB/octave)
    oq: float  # glottal open quotient
    rate: float  # syllables per second
    breath: float  # aspiration offset


def make_speakers(num_speakers, rng):
    """Half female, half male (alternating f, m, f, ...), with drawn voice parameters."""
    speakers = []
    for i in range(num_speakers):
        gender = GENDERS[i % 2]
        if gender == "m":
            f0 = rng.uniform(100.0, 135.0)
            scale = rng.uniform(0.94, 1.04)
        else:
            f0 = rng.uniform(185.0, 230.0)
            scale = rng.uniform(1.12, 1.22)
        speakers.append(Speaker(
            spk=f"spk{i + 1:02d}", gender=gender, f0=f0, f0_range=rng.uniform(1.5, 3.0),
            formant_scale=scale, tilt=rng.normal(0.0, 1.0), oq=rng.uniform(0.5, 0.65),
            rate=rng.uniform(3.6, 4.8), breath=rng.uniform(0.0, 0.04)))
    return speakers


def _utterance_params(speaker, emotion, rng):
    """Draws the prosody of one utterance: emotion profile scaled by a random expressiveness."""
    prof = PROFILES[emotion]
    neu = PROFILES["neutral"]
    # How strongly this utterance shows its emotion (0: like neutral, >1: exaggerated).
    k = rng.uniform(0.4, 1.4)

    def mix(key):
        return neu[key] + k * (prof[key] - neu[key])

    return dict(
        f0=speaker.f0 * 2.0 ** ((mix("f0") + rng.normal(0, 1.0)) / 12.0),
        range=speaker.f0_range * mix("range") * rng.uniform(0.7, 1.3),
        rate=speaker.rate * mix("rate") * rng.uniform(0.88, 1.12),
        gain_db=mix("gain") + rng.normal(0, 2.0),
        tilt=speaker.tilt + mix("tilt") + rng.normal(0, 1.0),
        oq=float(np.clip(speaker.oq + mix("oq") + rng.normal(0, 0.04), 0.3, 0.85)),
        jitter=max(0.0, mix("jitter") * rng.uniform(0.6, 1.4)),
        shimmer=max(0.0, mix("shimmer") * rng.uniform(0.6, 1.4)),
        breath=max(0.0, speaker.breath + mix("breath") * rng.uniform(0.5, 1.5)),
        rise=mix("rise") + rng.normal(0, 1.0),
    )


def _f0_contour(n, sr, syl_times, p, rng):
    """F0 (Hz) per sample: declination + one accent per syllable + final rise/fall + jitter drift."""
    t = np.arange(n) / sr
    dur = n / sr
    semis = -1.5 * (t / dur)  # declination over the utterance
    # Accents: Gaussian bumps at syllable centres, random heights scaled by the F0 range.
    heights = p["range"] * rng.uniform(-0.3, 1.0, size=len(syl_times))
    widths = rng.uniform(0.06, 0.12, size=len(syl_times))
    for c, h, w in zip(syl_times, heights, widths):
        semis = semis + h * np.exp(-0.5 * ((t - c) / w) ** 2)
    semis = semis + p["rise"] * np.clip((t - (dur - 0.4)) / 0.4, 0.0, 1.0) ** 2
    return p["f0"] * 2.0 ** (semis / 12.0)


def _glottal_source(f0, sr, p, rng):
    """Rosenberg-pulse derivative with per-period jitter and shimmer, plus aspiration noise."""
    n = len(f0)
    phase0 = np.cumsum(f0) / sr
    nper = int(phase0[-1]) + 2
    jit = 1.0 + p["jitter"] * rng.standard_normal(nper)
    phase = np.cumsum(f0 * jit[phase0.astype(np.int64)]) / sr
    period = phase.astype(np.int64)
    frac = phase - period
    # Rosenberg (1971) flow: rising half-cosine over tp, falling quarter-cosine over tn.
    oq = p["oq"]
    tp, tn = 0.65 * oq, 0.35 * oq
    flow = np.where(frac < tp, 0.5 * (1.0 - np.cos(np.pi * frac / tp)),
                    np.where(frac < tp + tn, np.cos(0.5 * np.pi * (frac - tp) / tn), 0.0))
    shim = np.exp(p["shimmer"] * rng.standard_normal(int(period[-1]) + 2))
    flow = flow * shim[period]
    # Lip radiation ~ first difference; aspiration noise gated by the open phase.
    src = np.diff(flow, prepend=0.0)
    src = src / (np.std(src) + 1e-9)
    open_gate = 0.3 + (frac < oq)
    src = src + p["breath"] * 8.0 * open_gate * rng.standard_normal(n)
    return src


def _syllables(duration, p, rng):
    """Syllable boundaries (s): voiced nuclei separated by short consonant gaps."""
    starts, ends = [], []
    t = rng.uniform(0.08, 0.2)
    stop = duration - rng.uniform(0.08, 0.2)
    mean_len = 1.0 / p["rate"]
    while t < stop - 0.1:
        length = mean_len * rng.uniform(0.7, 1.3)
        gap = length * rng.uniform(0.15, 0.35)
        nucleus_end = min(t + length - gap, stop)
        if nucleus_end - t < 0.05:
            break
        starts.append(t)
        ends.append(nucleus_end)
        t += length
        if rng.random() < 0.12:  # an occasional phrase pause
            t += rng.uniform(0.1, 0.25)
    return np.array(starts), np.array(ends)


def _envelopes(n, sr, starts, ends):
    """Voicing envelope (raised-cosine edges) and consonant (gap) envelope per sample."""
    t = np.arange(n) / sr
    voiced = np.zeros(n)
    for s, e in zip(starts, ends):
        ramp = min(0.03, 0.3 * (e - s))
        rise = np.clip((t - s) / ramp, 0.0, 1.0)
        fall = np.clip((e - t) / ramp, 0.0, 1.0)
        voiced = np.maximum(voiced, np.sin(0.5 * np.pi * np.minimum(rise, fall)) ** 2)
    cons = np.zeros(n)
    for e, s in zip(ends[:-1], starts[1:]):
        mid, half = 0.5 * (e + s), 0.5 * (s - e)
        cons = np.maximum(cons, np.clip(1.0 - np.abs(t - mid) / max(half, 1e-3), 0.0, 1.0))
    return voiced, cons


def _formant_envelope(freqs, formants, bandwidths):
    """|H(f)| of cascaded 2nd-order resonators; formants [frames, K] -> [frames, bins]."""
    f = freqs[None, None, :]
    F = formants[:, :, None]
    B = bandwidths[None, :, None]
    mag = 1.0 / np.sqrt((1.0 - (f / F) ** 2) ** 2 + (f * B / F ** 2) ** 2)
    return np.prod(mag, axis=1)


def synthesize(speaker, emotion, rng, sr=16000, duration=2.0):
    """One utterance of ``speaker`` in ``emotion``: float32 array in [-1, 1] of duration s."""
    if emotion not in PROFILES:
        raise ValueError(f"unknown emotion {emotion!r}; known: {list(PROFILES)}")
    p = _utterance_params(speaker, emotion, rng)
    n = int(round(duration * sr))
    starts, ends = _syllables(duration, p, rng)
    voiced_env, cons_env = _envelopes(n, sr, starts, ends)
    f0 = _f0_contour(n, sr, 0.5 * (starts + ends), p, rng)
    source = _glottal_source(f0, sr, p, rng) * voiced_env
    frication = rng.standard_normal(n) * cons_env * rng.uniform(0.05, 0.25)

    # Frame-wise filtering with 50%-overlapping Hann windows (sum to one: overlap-add is exact).
    win_len, hop, nfft = 512, 256, 1024
    nframes = n // hop + 2
    pad = np.zeros((nframes + 1) * hop)
    frames_idx = np.arange(nframes)[:, None] * hop + np.arange(win_len)[None, :]
    window = np.hanning(win_len + 1)[:-1]
    freqs = np.fft.rfftfreq(nfft, 1.0 / sr)
    frame_t = (np.arange(nframes) * hop + win_len / 2) / sr

    # Vowel sequence: one vowel per syllable, formants glide between syllable centres.
    vowels = VOWELS[rng.integers(0, len(VOWELS), size=max(len(starts), 1))]
    centres = 0.5 * (starts + ends) if len(starts) else np.array([duration / 2])
    formants = np.stack([np.interp(frame_t, centres, vowels[:, k]) for k in range(4)], axis=1)
    formants = formants * speaker.formant_scale * rng.uniform(0.97, 1.03)
    bw = BANDWIDTHS * (1.0 + 0.8 * max(p["oq"] - 0.5, 0.0))  # breathy voices: wider bandwidths
    env = _formant_envelope(freqs, formants, bw)
    # Spectral tilt relative to 500 Hz, in dB/octave; vocal effort raises high frequencies.
    tilt_db = p["tilt"] * np.log2(np.maximum(freqs, 60.0) / 500.0)
    env = env * 10.0 ** (tilt_db / 20.0)[None, :]
    # Fricatives: broad high-frequency noise around 3-6 kHz.
    fric_centre = rng.uniform(3000, 6000)
    fric_env = np.exp(-0.5 * ((freqs - fric_centre) / 1500.0) ** 2)[None, :]

    # The envelopes are zero-phase, so each windowed frame sits centred in its FFT buffer:
    # the filter's spread to both sides stays inside the buffer instead of wrapping around.
    off = (nfft - win_len) // 2
    npass = nfft // hop  # frames npass apart do not overlap: add them in npass vector passes

    def filt(x, spec_env):
        buf = pad.copy()
        buf[:n] = x
        framed = np.zeros((nframes, nfft))
        framed[:, off:off + win_len] = buf[frames_idx] * window
        out_frames = np.fft.irfft(np.fft.rfft(framed, axis=1) * spec_env, n=nfft, axis=1)
        out = np.zeros((nframes + npass) * hop + nfft)
        for first in range(npass):
            rows = np.arange(first, nframes, npass)
            idx = (rows[:, None] * hop + np.arange(nfft)[None, :]).ravel()
            out[idx] += out_frames[rows].ravel()
        return out[off:off + n]

    speech = filt(source, env) + filt(frication, fric_env * np.max(env) * 0.1)
    # Level: the emotion's vocal effort (dB) on top of a random recording level.
    speech = speech / (np.sqrt(np.mean(speech[voiced_env > 0.5] ** 2)) + 1e-9)
    speech = speech * 10.0 ** ((p["gain_db"] + rng.normal(-20.0, 3.0)) / 20.0)
    # Background noise (pink-ish: 1/sqrt(f) amplitude) at a random SNR against active speech.
    snr_db = rng.uniform(5.0, 25.0)
    white = np.fft.rfft(rng.standard_normal(n))
    pink = np.fft.irfft(white / np.sqrt(np.maximum(np.fft.rfftfreq(n, 1.0 / sr), 50.0)), n=n)
    speech_power = np.mean(speech[voiced_env > 0.5] ** 2)
    pink = pink * np.sqrt(speech_power / (np.mean(pink ** 2) * 10.0 ** (snr_db / 10.0)))
    wav = speech + pink
    peak = np.max(np.abs(wav))
    if peak > 0.99:  # a limiter, as a recording engineer would set the gain
        wav = wav * (0.99 / peak)
    return wav.astype(np.float32)


def generate_corpus(out_dir, data_dir=None, num_speakers=8, utts_per_class=10, seed=0, sr=16000,
                    num_folds=4, min_dur=1.5, max_dur=3.0, emotions=EMOTIONS):
    """Writes ``out_dir/wav/*.wav`` and a data dir (default ``out_dir/data``); returns the data dir.

    Utterance ids are ``<spk>_<emotion>_<nnn>``; speakers alternate f/m; folds are
    speaker-disjoint with genders balanced (speakers of each gender dealt round-robin).
    """
    from genser.audio import write_wav
    from genser.datadir import write_data_dir

    if num_speakers < 2:
        raise ValueError(f"num_speakers must be at least 2 (both genders), got {num_speakers}")
    if not 1 <= num_folds <= num_speakers:
        raise ValueError(f"num_folds must be between 1 and num_speakers ({num_speakers}), "
                         f"got {num_folds}")
    if utts_per_class < 1:
        raise ValueError(f"utts_per_class must be >= 1, got {utts_per_class}")
    if not 0.3 <= min_dur <= max_dur:
        raise ValueError(f"need 0.3 <= min_dur <= max_dur, got {min_dur}, {max_dur}")
    unknown = [e for e in emotions if e not in PROFILES]
    if unknown:
        raise ValueError(f"unknown emotions {unknown}; known: {list(PROFILES)}")
    out_dir = Path(out_dir)
    data_dir = Path(data_dir) if data_dir is not None else out_dir / "data"
    wav_dir = out_dir / "wav"
    wav_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    speakers = make_speakers(num_speakers, np.random.default_rng([seed, 0]))
    folds = speaker_folds(speakers, num_folds)
    records = []
    for si, spk in enumerate(speakers):
        for ei, emo in enumerate(emotions):
            for j in range(utts_per_class):
                rng = np.random.default_rng([seed, 1, si, ei, j])
                dur = float(rng.uniform(min_dur, max_dur))
                wav = synthesize(spk, emo, rng, sr=sr, duration=dur)
                utt = f"{spk.spk}_{emo}_{j + 1:03d}"
                path = (wav_dir / f"{utt}.wav").resolve()
                write_wav(path, wav, sr)
                records.append(dict(utt=utt, path=str(path), spk=spk.spk, emo=emo,
                                    gender=spk.gender, fold=folds[spk.spk], dur=len(wav) / sr))
    write_data_dir(data_dir, records, labels={"emo": list(emotions), "gender": list(GENDERS)})
    logger.info("synthesised %d utterances (%d speakers) in %.1f s -> %s", len(records),
                num_speakers, time.time() - t0, data_dir)
    return data_dir


def speaker_folds(speakers, num_folds):
    """{spk: fold "1".."num_folds"}: each gender dealt round-robin, continuing across genders."""
    folds, k = {}, 0
    for gender in GENDERS:
        for spk in speakers:
            if spk.gender == gender:
                folds[spk.spk] = str(k % num_folds + 1)
                k += 1
    return folds

