"""Classify speech with a trained genser model from Python (genser-infer is a thin CLI on this).

    from genser.inference import Classifier
    clf = Classifier.from_pretrained("exp/.../fold_03/model.pt")   # or an exported folder
    pred = clf.classify_file("a.wav")                                # Prediction
    print(pred.label, pred.confidence, pred.posteriors)              # "angry", 0.93, {label: p}
    tl = clf.timeline("meeting.wav", segment="vad")                  # Timeline of segment Predictions

``from_pretrained`` takes a ``model.pt`` written by training or genser-export, or an exported
folder (whose sha256 checksums are verified first). The frontend the model records is rebuilt
from wherever it lies when loading it cannot run code (genser/trust.py); anything else needs
``frontend_path=`` or ``trust_frontend=True``.

A model trained on per-speaker CMVN features (``model_norm(extra)``) normalises new audio the
same way, with genser.cmvn.normalize_unit. By default each file is one clip normalised alone
against the training moments (the "clip" protocol); ``classify_files(paths, speaker=...)`` takes
all files as one speaker and ``utt2spk={file: speaker}`` groups them, so a speaker's own moments
count. The segments of one recording (``timeline``) are taken as one speaker.

Errors are ``InferenceError`` (a ValueError) naming the file (and the model); nothing here
exits the process.
"""
import json
import logging
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

import genser
from genser.audio import AudioError, AudioReader
from genser.checkpoint import ModelError, load_model
from genser.cmvn import normalize_unit
from genser.features import from_matrix, pad_collate, stack_layers, to_matrix
from genser.fileio import atomic_open, read_kv
from genser.frontend import FrontendError, build_frontend, frontend_spec
from genser.onnx_head import ExportError
from genser.trust import stored_frontend_spec
from genser.vad import SILERO_FRAME, SILERO_RATE, SileroVAD, VADError, fixed_windows, speech_regions

__all__ = ["Classifier", "InferenceError", "Prediction", "Timeline", "check_segment_options", "collect_inputs",
           "model_norm", "read_utt2spk", "UNKNOWN"]

log = logging.getLogger("genser.inference")

UNKNOWN = "unknown"
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif", ".au", ".opus")
SEGMENT_MODES = ("vad", "window")
LONG_WHOLE_S = 60.0  # a file classified whole above this length (s) gets a warning
# Errors of one input (unreadable audio, a frontend that cannot take it): reported per file.
INPUT_ERRORS = (AudioError, ValueError, RuntimeError)


class InferenceError(ValueError):
    """A model or an input that cannot be classified; the message names the file."""


def one_line(exc):
    """An exception message on one line (a CLI prints one line per problem)."""
    return " ".join(str(exc).split()) or type(exc).__name__


def model_norm(extra):
    """The feature normalisation a checkpoint's ``extra`` records (keys norm_vars, relevance, mean,
    var), or None: ``extra["norm"]`` in newer checkpoints, ``extra["feats"]["cmvn"]`` in older ones."""
    return extra.get("norm") or (extra.get("feats") or {}).get("cmvn")


@dataclass
class Prediction:
    """One decision: ``label`` (or UNKNOWN below the classifier's min_confidence), the model's
    ``posteriors`` {label: p}, calibrated by the model's own temperature (genser-train --calibrate;
    the model applies it), and ``confidence``, the largest of them. ``path`` is the file (None
    for a waveform); ``start``/``end`` (s) are set for the segments of a timeline."""

    label: str
    posteriors: dict
    confidence: float
    path: str = None
    start: float = None
    end: float = None

    def to_dict(self):
        out = {"start": self.start, "end": self.end} if self.start is not None else {}
        return {**out, "label": self.label, "confidence": round(self.confidence, 4),
                "scores": {k: round(v, 4) for k, v in self.posteriors.items()}}


@dataclass
class Timeline:
    """The segments of one recording, each a Prediction with start and end; ``info`` says how
    they were made (model, nsteps, eta, segmentation, genser version)."""

    path: str
    duration: float
    labels: list
    segments: list
    envelope: np.ndarray = field(repr=False)  # peak |sample| per 32-ms frame, for the plot
    info: dict = field(default_factory=dict)

    def to_dict(self, utt=None):
        return {"id": utt if utt is not None else self.path, "path": str(self.path),
                "duration": round(self.duration, 3), "labels": self.labels, **self.info,
                "segments": [s.to_dict() for s in self.segments]}

    def write(self, out_dir, name, utt=None):
        """<out_dir>/<name>.tsv, .json and .png, each written atomically."""
        from genser.plots import plot_timeline  # matplotlib only when plotting

        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        rows = [s.to_dict() for s in self.segments]
        with atomic_open(out_dir / f"{name}.tsv") as f:
            f.write("\t".join(["start", "end", "label", *self.labels]) + "\n")
            for r in rows:
                f.write("\t".join([f"{r['start']:.3f}", f"{r['end']:.3f}", r["label"],
                                   *(f"{r['scores'][k]:.4f}" for k in self.labels)]) + "\n")
        with atomic_open(out_dir / f"{name}.json") as f:
            json.dump(self.to_dict(utt), f, indent=1)
            f.write("\n")
        plot_timeline(self.envelope, SILERO_FRAME / SILERO_RATE, rows, self.labels, out_dir / f"{name}.png",
                      title=f"{utt or Path(self.path).name} ({self.duration:.1f} s, {len(rows)} segments)")


# ---- inputs --------------------------------------------------------------------------------
def collect_inputs(wavs, wav_scp=None):
    """[(id, path, name)]: files as given (id = the path), every audio file under a directory
    (id = its path relative to the directory, without the suffix) and wav.scp entries; ``name``
    is a file-name-safe form of the id for timeline files, unique within the list."""
    items = []
    for arg in wavs:
        path = Path(arg)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES)
            if not found:
                raise InferenceError(f"no audio files ({', '.join(AUDIO_SUFFIXES)}) under {path}")
            items += [(str(p.relative_to(path).with_suffix("")), str(p), None) for p in found]
        else:
            items.append((str(arg), str(arg), path.stem))
    if wav_scp:
        items += [(utt, path, None) for utt, path in read_kv(wav_scp).items()]
    seen, ids, out = {}, set(), []
    for utt, path, name in items:
        if utt in ids:
            raise InferenceError(f"input {utt!r} is given twice")
        ids.add(utt)
        base = re.sub(r"[^A-Za-z0-9._-]+", "_", name or utt).strip("._") or "rec"
        seen[base] = seen.get(base, 0) + 1
        out.append((utt, path, base if seen[base] == 1 else f"{base}_{seen[base]}"))
    return out


def read_utt2spk(path):
    """{file path, file name or id: speaker} from lines ``<path-or-name> <speaker>``."""
    try:
        return read_kv(path)
    except (OSError, ValueError) as exc:
        raise InferenceError(f"cannot read the utt2spk file {path}: {one_line(exc)}") from None


def _speaker_of(utt2spk, utt, path):
    """The speaker that ``utt2spk`` gives an input, looked up by id, path, file name or stem."""
    for key in (utt, str(path), Path(path).name, Path(path).stem):
        if key in utt2spk:
            return utt2spk[key]
    raise InferenceError(f"{path}: no speaker for it in the utt2spk mapping (looked up {utt!r}, its path, "
                         f"file name and stem)")


def check_segment_options(*, segment="vad", vad_threshold=0.5, **lengths):
    """InferenceError for a segmentation ``timeline`` would refuse (lengths must be positive)."""
    if segment not in SEGMENT_MODES:
        raise InferenceError(f"segment must be one of {SEGMENT_MODES}, got {segment!r}")
    for name, value in lengths.items():
        if not value > 0:
            raise InferenceError(f"{name} must be positive, got {value}")
    if not 0.0 < vad_threshold < 1.0:
        raise InferenceError(f"vad_threshold must lie in (0, 1), got {vad_threshold}")


# ---- the classifier ------------------------------------------------------------------------
class Classifier:
    """A trained model with its frontend: waveforms and files in, Predictions out.

    Args:
        model: a genser model (genser.models), eval mode.
        frontend: the frontend it was trained on (genser.frontend.build_frontend).
        feats_meta: the checkpoint's ``extra["feats"]`` (layers, pooling, sizes).
        norm: the normalisation (``model_norm(extra)``) or None.
        temperature: the posteriors' temperature; set on the model, which applies it (the
            model's own, ``model.temperature``, when None).
        nsteps, eta, seed: Gen-SER sampler steps, stochasticity and its seed.
        min_confidence: below this confidence the label is UNKNOWN (0: never).
        source: what to name in messages (the model file).
    """

    def __init__(self, model, frontend, feats_meta, *, norm=None, temperature=None, nsteps=1, eta=0.0, seed=0,
                 min_confidence=0.0, device="cpu", source="the model"):
        if not 0.0 <= min_confidence <= 1.0:
            raise InferenceError(f"min_confidence must lie in [0, 1], got {min_confidence}")
        if temperature is None:
            temperature = getattr(model, "temperature", 1.0)
        if not isinstance(temperature, (int, float)) or not temperature > 0:
            raise InferenceError(f"{source}: the temperature must be a positive number, got {temperature!r}")
        self.model, self.frontend, self.feats_meta = model.to(device).eval(), frontend, feats_meta
        # one place applies the temperature: the model's predict (so decode, export and ONNX agree)
        self.model.temperature = float(temperature)
        self.norm, self.temperature = norm, float(temperature)
        self.nsteps, self.eta, self.seed = int(nsteps), float(eta), int(seed)
        self.min_confidence, self.device, self.source = float(min_confidence), device, str(source)
        self.generator = torch.Generator(device=device).manual_seed(self.seed)
        self.reader = AudioReader(target_sr=frontend.sample_rate)
        self._vad = {}

    @property
    def labels(self):
        return list(self.model.labels)

    @property
    def sample_rate(self):
        return self.frontend.sample_rate

    @classmethod
    def from_pretrained(cls, path, *, device="cpu", frontend_path=None, trust_frontend=False, **options):
        """The classifier of a ``model.pt`` or an exported folder. ``frontend_path`` replaces the
        frontend file the model names; ``trust_frontend`` loads it even if that could run code.
        ``options``: nsteps, eta, seed, min_confidence (see the class)."""
        from genser.export import export_folder_of, verify_export

        model_path = Path(path) / "model.pt" if Path(path).is_dir() else Path(path)
        folder = export_folder_of(model_path)
        try:
            if folder is not None:
                verify_export(folder)
            model, extra = load_model(model_path, map_location=device)
        except (ModelError, ExportError) as exc:
            raise InferenceError(one_line(exc)) from None
        meta = extra.get("feats")
        if not meta or "frontend" not in meta:
            raise InferenceError(f"{model_path} does not record its frontend (no 'feats' entry); "
                                 f"it was not written by genser.bin.train")
        # NaN/inf weights (a diverged run) give NaN posteriors for every input: refuse the model
        # once instead of answering nan for every file.
        bad = [n for n, t in model.state_dict().items() if t.is_floating_point() and not torch.isfinite(t).all()]
        if bad:
            raise InferenceError(f"{model_path}: non-finite (NaN or inf) weights in {len(bad)} tensor(s), e.g. "
                                 f"{bad[0]}; the training run diverged, use another checkpoint")
        try:
            if frontend_path is not None:  # named by the user: loaded as given
                spec = frontend_spec({**meta["frontend"], "path": str(frontend_path)})
            else:
                spec = stored_frontend_spec(meta["frontend"], model_path, trust=trust_frontend)
            # A stored spec loads safetensors only (unless trusted): a pickle that appears in the
            # folder after the check is never unpickled.
            frontend = build_frontend(spec, device=device,
                                      safetensors_only=frontend_path is None and not trust_frontend)
        except FrontendError as exc:
            raise InferenceError(f"{model_path}: cannot rebuild its frontend: {one_line(exc)}") from None
        return cls(model, frontend, meta, norm=model_norm(extra), temperature=extra.get("temperature") or 1.0,
                   device=device, source=model_path, **options)

    # ---- the pieces ---------------------------------------------------------------------
    def features(self, wavs):
        """1-D waveforms at ``sample_rate`` -> [T, L, D] arrays as stage 1 stored them (before
        any speaker normalisation)."""
        outputs, lengths = self.frontend(wavs)
        return [from_matrix(to_matrix(f, self.feats_meta["pooling"]), self.feats_meta)
                for f in stack_layers(outputs, lengths, self.feats_meta["layers"])]

    def normalise(self, feats, where="the input"):
        """The features of one speaker normalised as the model's training dump was (as they are
        for a model trained without normalisation)."""
        if not self.norm:
            return feats
        out, alone = normalize_unit(feats, self.norm)
        if alone:
            log.warning("%s: one utterance, for a model trained on per-speaker CMVN without shrinkage "
                        "(relevance 0): normalised with the training moments alone", where)
        return out

    @torch.no_grad()
    def scores(self, feats, where="the input"):
        """Posteriors [B, K] (numpy) of normalised features; InferenceError if any is not finite."""
        batch, lengths, _ = pad_collate([(f, 0) for f in feats])
        out = self.model.predict(batch.to(self.device), lengths.to(self.device), nsteps=self.nsteps, eta=self.eta,
                                 generator=self.generator)
        scores = out["scores"].cpu().numpy()
        if not np.isfinite(scores).all():
            raise InferenceError(f"{where}: {self.source} gives non-finite posteriors")
        return scores

    def posteriors(self, wavs, where="the input"):
        """Posteriors [B, K] of 1-D waveforms at ``sample_rate``, taken as one speaker."""
        return self.scores(self.normalise(self.features(wavs), where), where)

    def decide(self, scores, path=None, start=None, end=None):
        """A Prediction from one row of posteriors."""
        conf = float(np.max(scores))  # the model's posteriors are already calibrated
        label = self.labels[int(np.argmax(scores))] if conf >= self.min_confidence else UNKNOWN
        return Prediction(label, dict(zip(self.labels, map(float, scores))), conf, path,
                          None if start is None else round(float(start), 3), None if end is None else round(float(end), 3))

    # ---- whole inputs -------------------------------------------------------------------
    def classify(self, waveform, sr):
        """The Prediction of one waveform (1-D, or [channels, samples]) at rate ``sr``, one clip."""
        wav = torch.as_tensor(np.asarray(waveform), dtype=torch.float32)
        if wav.dim() == 2:
            wav = wav.mean(0)
        if int(sr) != self.sample_rate:
            # the reader's own resampler, so that a waveform and its file give the same answer
            wav = self.reader._resample(wav, int(sr)).clamp_(-1.0, 1.0)
        try:
            return self.decide(self.posteriors([wav], "the waveform")[0])
        except (ValueError, RuntimeError) as exc:
            raise InferenceError(f"the waveform: {one_line(exc)}") from None

    def _read(self, utt, path):
        wav = self.reader(utt, path)
        if wav.numel() > LONG_WHOLE_S * self.sample_rate:
            log.warning("%s: %.0f s classified whole, as one utterance; a timeline (genser-infer --segment "
                        "vad or window) classifies a long recording in segments", path, wav.numel() / self.sample_rate)
        return wav

    def classify_file(self, path):
        """The Prediction of one audio file, classified whole as one clip."""
        return self.classify_files([path])[0]

    def classify_files(self, paths, *, speaker=None, utt2spk=None, ids=None, on_error=None, progress=False):
        """Predictions of audio files, each classified whole, in order.

        For a model trained on per-speaker CMVN: ``speaker`` (any value) takes all files as that
        one speaker; ``utt2spk`` ({file path, name, stem or id: speaker}) groups them; neither:
        each file is a clip of its own. ``ids`` name the files (default: the paths). An input
        that fails raises InferenceError naming it, unless ``on_error(id, path, exc)`` is given:
        it is called and the file's entry is None. ``progress``: a tqdm bar on stderr.
        """
        paths = [str(p) for p in paths]
        ids = list(ids) if ids is not None else paths
        results = [None] * len(paths)

        def failed(i, exc):
            err = InferenceError(f"{paths[i]}: {one_line(exc)}" if paths[i] not in str(exc) else one_line(exc))
            if on_error is None:
                raise err from None
            on_error(ids[i], paths[i], err)

        bar = tqdm(range(len(paths)), desc="files", unit="file", file=sys.stderr, disable=not progress)
        if not self.norm or (speaker is None and utt2spk is None):
            for i in bar:  # one at a time: any length, no padding effects
                try:
                    feats = self.features([self._read(ids[i], paths[i])])
                    results[i] = self.decide(self.scores(self.normalise(feats, paths[i]), paths[i])[0], paths[i])
                except INPUT_ERRORS as exc:
                    failed(i, exc)
            return results
        raw, groups = {}, {}
        for i in bar:  # the features of every file first: a speaker's moments need all its files
            try:
                group = speaker if utt2spk is None else _speaker_of(utt2spk, ids[i], paths[i])
                raw[i] = self.features([self._read(ids[i], paths[i])])[0]
                groups.setdefault(group, []).append(i)
            except INPUT_ERRORS as exc:
                failed(i, exc)
        for group, members in groups.items():
            normalised = self.normalise([raw[i] for i in members], f"speaker {group}")
            for i, f in zip(members, normalised):
                try:
                    results[i] = self.decide(self.scores([f], paths[i])[0], paths[i])
                except INPUT_ERRORS as exc:
                    failed(i, exc)
        return results

    # ---- long recordings ----------------------------------------------------------------
    def _scan(self, utt, path, block_seconds, vad, progress):
        """One streaming pass: (duration s, peak |sample| per 32-ms frame, speech probability per
        frame or None). Nothing longer than a block is held in memory."""
        sr, frames, _ = self.reader.info(utt, path)
        peaks, probs, samples, rest = [], [], 0, torch.zeros(0)
        if vad is not None:
            vad.reset()
        bar = tqdm(total=round(frames / sr, 1), desc="scan" if vad is None else "voice activity", unit="s",
                   file=sys.stderr, disable=not progress, leave=False)
        for block in self.reader.stream(utt, path, block_seconds):
            samples += block.numel()
            bar.update(round(block.numel() / self.sample_rate, 1))
            if vad is not None:
                probs.append(vad(block))
            block = torch.cat([rest, block])
            n = block.numel() // SILERO_FRAME
            peaks.append(block[:n * SILERO_FRAME].reshape(n, SILERO_FRAME).abs().amax(dim=1).numpy())
            rest = block[n * SILERO_FRAME:]
        bar.close()
        if rest.numel():
            peaks.append(rest.abs().amax(dim=0, keepdim=True).numpy())
        if vad is not None:
            probs.append(vad.flush())
        envelope = np.concatenate(peaks) if peaks else np.zeros(0, dtype=np.float32)
        return samples / self.sample_rate, envelope, (np.concatenate(probs) if vad is not None else None)

    def vad(self, model_path=None):
        """The Silero VAD (one per model file, kept)."""
        if model_path not in self._vad:
            try:
                self._vad[model_path] = SileroVAD(model_path)
            except VADError as exc:
                raise InferenceError(one_line(exc)) from None
        return self._vad[model_path]

    def timeline(self, path, segment="vad", *, utt=None, window=3.0, hop=1.5, vad_threshold=0.5, min_speech=0.25,
                 min_silence=0.5, speech_pad=0.1, max_segment=20.0, block_seconds=30.0, vad_model=None,
                 progress=False):
        """The Timeline of a recording: ``segment="vad"`` puts one segment on each speech region
        (Silero VAD, regions longer than ``max_segment`` cut), ``"window"`` fixed windows of
        ``window`` s every ``hop`` s. Each segment is read from the file on its own, so memory does
        not grow with the recording; for a model trained on per-speaker CMVN, the segments are one
        speaker. A recording without speech gets an empty timeline (and a warning)."""
        check_segment_options(segment=segment, window=window, hop=hop, max_segment=max_segment,
                              block_seconds=block_seconds, vad_threshold=vad_threshold)
        utt, path = utt or str(path), str(path)
        vad = self.vad(vad_model) if segment == "vad" else None
        try:
            duration, envelope, probs = self._scan(utt, path, block_seconds, vad, progress)
            if segment == "window":
                spans = fixed_windows(duration, window, hop)
            else:
                spans = speech_regions(probs, SILERO_FRAME / SILERO_RATE, duration, threshold=vad_threshold,
                                       min_speech=min_speech, min_silence=min_silence, pad=speech_pad,
                                       max_segment=max_segment)
            if not spans:
                log.warning("%s: no speech found (%.1f s); empty timeline", path, duration)
            segments = self._classify_spans(utt, path, spans, progress)
        except InferenceError:
            raise
        except INPUT_ERRORS as exc:
            raise InferenceError(f"{path}: {one_line(exc)}" if path not in str(exc) else one_line(exc)) from None
        options = {"window": window, "hop": hop} if segment == "window" else {
            "vad_threshold": vad_threshold, "min_speech": min_speech, "min_silence": min_silence,
            "speech_pad": speech_pad, "max_segment": max_segment}
        info = {"model": str(self.source), "nsteps": self.nsteps, "eta": self.eta, "seed": self.seed,
                "temperature": self.temperature, "normalisation": "per-speaker CMVN" if self.norm else "none",
                "segment": {"mode": segment, **options}, "genser_version": genser.__version__}
        return Timeline(path, duration, self.labels, segments, envelope, info)

    def _classify_spans(self, utt, path, spans, progress):
        def features(span):
            return self.features([self.reader(utt, path, start=span[0], end=span[1])])

        bar = tqdm(spans, desc="segments", unit="seg", file=sys.stderr, disable=not progress, leave=False)
        if self.norm:  # the segments of a recording are one speaker: all their features first
            feats = iter([f] for f in self.normalise([features(s)[0] for s in bar], path))
            bar = spans
        else:  # one segment at a time: memory does not grow with the recording
            feats = None
        out = []
        for span in bar:
            f = next(feats) if feats is not None else features(span)
            where = f"{path} [{span[0]:.3f}, {span[1]:.3f}]"
            out.append(self.decide(self.scores(f, where)[0], path, *span))
        return out
