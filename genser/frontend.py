"""Speech frontends: waveforms -> the hidden states of every layer, with valid lengths.

``build_frontend(spec)`` takes a small dict (usually from a YAML file)::

    {type: s3prl, name: fbank}                            # any s3prl upstream by name
    {type: s3prl, name: wavlm_local, path: /ckpt/x.pt}    # s3prl *_local upstream + checkpoint
    {type: hf, path: /models/whisper-base, whisper_mode: sliced}   # local transformers folder
    {type: opensmile, feature_set: eGeMAPSv02, feature_level: functionals}  # openSMILE (Eyben et al. 2016)

Every frontend, like s3prl's ``S3PRLUpstream``, runs a pseudo waveform once at construction to
learn ``num_layers`` and ``hidden_size``, and ``forward(wavs)`` returns
``(layers, lengths)``: a list of ``num_layers`` tensors [B, T, D] and the valid frames [B].
``describe()`` is recorded in feats.yaml (and model checkpoints); ``build_frontend`` accepts it
back, so genser-infer rebuilds the frontend the features came from.
"""
import difflib
import json
import logging
import math
from pathlib import Path

import torch
from torch import nn

logger = logging.getLogger(__name__)

SAMPLE_RATE = 16000
WHISPER_MODES = ("sliced", "padded")
# Keys that describe() adds for the record; build_frontend accepts and ignores them.
INFO_KEYS = ("num_layers", "hidden_size", "frame_rate", "sample_rate", "model_type")
SPEC_KEYS = {
    "s3prl": {"type", "name", "path", "extra_conf", "refresh"},
    "hf": {"type", "path", "whisper_mode", "normalize"},
    "opensmile": {"type", "feature_set", "feature_level"},
}
# The key a spec of each type cannot do without.
SPEC_NEEDS = {"s3prl": "name", "hf": "path", "opensmile": "feature_set"}
# Wav2vec2-style models that take raw waveforms ("input_values") and return hidden_states.
HF_WAVEFORM_TYPES = ("wav2vec2", "hubert", "wavlm", "data2vec-audio", "wav2vec2-conformer",
                     "unispeech", "unispeech-sat", "sew", "sew-d")


class FrontendError(ValueError):
    """A frontend that cannot be built (bad spec, unavailable model); the message says why."""


class UntrustedFrontendError(FrontendError):
    """A frontend file named inside a model checkpoint that is not loaded without the user's say-so
    (the policy is in genser/trust.py)."""


class Frontend(nn.Module):
    """Base class: subclasses implement ``_forward(wavs) -> (layers, lengths)`` on one device."""

    sample_rate = SAMPLE_RATE
    # Shortest input the model can take (samples); shorter waveforms are zero padded to it.
    min_samples = 400
    # Longest input (samples) or None.
    max_samples = None
    # True for frontends whose output is already one vector per utterance (openSMILE functionals).
    utterance_level = False

    def __init__(self, spec, frame_rate):
        super().__init__()
        self.spec = dict(spec)
        self.frame_rate = float(frame_rate)
        self.num_layers = self.hidden_size = None
        self.model_type = None  # transformers model_type, recorded by describe()

    @property
    def device(self):
        return next(self.parameters(), torch.empty(0)).device

    def _probe(self):
        """Learns num_layers/hidden_size from two pseudo waveforms (as s3prl does)."""
        gen = torch.Generator().manual_seed(0)
        wavs = [0.1 * torch.randn(SAMPLE_RATE, generator=gen), 0.1 * torch.randn(SAMPLE_RATE // 2, generator=gen)]
        layers, lengths = self.forward(wavs)
        sizes = sorted({h.shape[-1] for h in layers})
        if len(sizes) != 1:
            raise FrontendError(f"frontend {self.spec}: layers have different sizes {sizes}; genser stores "
                                f"all layers as one [T, L, D] array and needs one size")
        self.num_layers, self.hidden_size = len(layers), sizes[0]
        if int(lengths[0]) < int(lengths[1]):
            raise FrontendError(f"frontend {self.spec}: probe gave lengths {lengths.tolist()} for 1.0 s and 0.5 s")

    @torch.no_grad()
    def forward(self, wavs):
        """wavs: list of 1-D float tensors at 16 kHz -> (list of [B, T, D] per layer, lengths [B])."""
        if not len(wavs):
            raise ValueError("frontend got an empty batch")
        checked = []
        for i, wav in enumerate(wavs):
            wav = torch.as_tensor(wav, dtype=torch.float32)
            if wav.dim() != 1 or wav.numel() == 0:
                raise ValueError(f"frontend input {i}: expected a non-empty 1-D waveform, got shape "
                                 f"{tuple(wav.shape)}")
            if self.max_samples is not None and wav.numel() > self.max_samples:
                raise ValueError(f"frontend input {i}: {wav.numel() / SAMPLE_RATE:.2f} s is longer than "
                                 f"the {self.max_samples / SAMPLE_RATE:.0f} s this model takes")
            if wav.numel() < self.min_samples:
                wav = nn.functional.pad(wav, (0, self.min_samples - wav.numel()))
            checked.append(wav.to(self.device))
        self.eval()
        layers, lengths = self._forward(checked)
        return list(layers), lengths.to(torch.long).cpu()

    def describe(self):
        """The spec (enough to rebuild this frontend) plus sizes, for feats.yaml."""
        out = {**self.spec, "num_layers": self.num_layers, "hidden_size": self.hidden_size,
               "frame_rate": self.frame_rate, "sample_rate": self.sample_rate}
        if self.model_type is not None:
            out["model_type"] = self.model_type
        return out


def pad_wavs(wavs):
    """List of 1-D tensors -> zero-padded [B, S] and lengths [B]."""
    lengths = torch.tensor([w.numel() for w in wavs], dtype=torch.long)
    return nn.utils.rnn.pad_sequence(wavs, batch_first=True), lengths


def _pad_cat(runs):
    """Per-utterance runs (each a list of [1, T_i, D] per layer) -> list of [B, T_max, D]."""
    T = max(r[0].shape[1] for r in runs)
    return [torch.cat([nn.functional.pad(r[i], (0, 0, 0, T - r[i].shape[1])) for r in runs])
            for i in range(len(runs[0]))]


# ---------------------------------------------------------------------------------------------
# s3prl upstreams
# ---------------------------------------------------------------------------------------------
class S3PRLFrontend(Frontend):
    """Any s3prl upstream through ``s3prl.nn.S3PRLUpstream``."""

    def __init__(self, spec):
        from genser.compat import import_s3prl

        import_s3prl()
        from s3prl.nn import S3PRLUpstream

        name, path = spec["name"], spec.get("path")
        names = S3PRLUpstream.available_names()
        _check_s3prl_name(names, name, path)
        try:
            upstream = S3PRLUpstream(name, path_or_url=None if path is None else str(path),
                                     refresh=bool(spec.get("refresh", False)), extra_conf=spec.get("extra_conf"))
        except OSError as exc:  # requests' ConnectionError, huggingface_hub errors, ... are OSErrors
            if path is not None:
                raise FrontendError(f"s3prl upstream {name!r} could not load {path}: {exc}") from exc
            raise FrontendError(_download_hint(names, name, exc)) from exc
        rates = set(upstream.downsample_rates)
        if len(rates) != 1:
            raise FrontendError(f"s3prl upstream {name!r}: layers have different frame rates "
                                f"(downsample rates {sorted(rates)}); not supported")
        super().__init__(spec, SAMPLE_RATE / rates.pop())
        self.upstream = upstream.eval()
        self._probe()

    def _forward(self, wavs):
        # One utterance at a time: in a padded batch s3prl counts frames that overlap the padding
        # as valid (fbank: the last 2 frames become zeros), so features would depend on batch-mates.
        runs, lengths = [], []
        for wav in wavs:
            layers, layer_lengths = self.upstream(wav[None], torch.tensor([wav.numel()], device=wav.device))
            if any(not torch.equal(n, layer_lengths[0]) for n in layer_lengths[1:]):
                raise FrontendError(f"s3prl upstream {self.spec['name']!r}: layers have different lengths")
            runs.append([h[:, : int(layer_lengths[0][0])] for h in layers])
            lengths.append(layer_lengths[0].cpu())
        return _pad_cat(runs), torch.cat(lengths)


def _check_s3prl_name(names, name, path):
    if name not in names:
        close = difflib.get_close_matches(name, names, n=5, cutoff=0.5)
        raise FrontendError(f"unknown s3prl upstream {name!r}" + (f"; did you mean {', '.join(close)}?" if close
                            else f"; see S3PRLUpstream.available_names() ({len(names)} names)"))
    takes_path = name.endswith(("_local", "_url", "_custom"))
    if takes_path and path is None:
        raise FrontendError(f"s3prl upstream {name!r} needs a checkpoint: give 'path' "
                            f"(--frontend_path, or path: in the frontend conf)")
    if not takes_path and path is not None:
        # s3prl ignores a local path for named upstreams and downloads anyway.
        raise FrontendError(f"s3prl upstream {name!r} does not take a path ({path}); use the matching "
                            f"*_local upstream, e.g. {_local_alternative(names, name)}")
    if name.endswith("_local") and not Path(path).is_file():
        raise FrontendError(f"s3prl upstream {name!r}: checkpoint not found: {path}")


def _local_alternative(names, name):
    """The *_local upstream whose prefix is the longest match of ``name`` (wavlm_large -> wavlm_local)."""
    best = ""
    for cand in names:
        if cand.endswith("_local") and name.startswith(cand[: -len("_local")]) and len(cand) > len(best):
            best = cand
    return best or "wavlm_local"


def _download_hint(names, name, exc):
    local = _local_alternative(names, name)
    return (f"s3prl upstream {name!r} could not be downloaded ({type(exc).__name__}: {exc}). Without network "
            f"access, use a local checkpoint, {{type: s3prl, name: {local}, path: /path/to/ckpt.pt}} "
            f"(ser.sh: --frontend {local} --frontend_path /path/to/ckpt.pt), or a local transformers folder, "
            f"{{type: hf, path: /path/to/folder}} in a YAML file given as --frontend_conf.")


# ---------------------------------------------------------------------------------------------
# transformers folders
# ---------------------------------------------------------------------------------------------
def _read_json(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _hf_model_type(folder):
    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise FrontendError(f"{folder} is not a transformers model folder (no config.json)")
    model_type = _read_json(folder / "config.json").get("model_type")
    if model_type != "whisper" and model_type not in HF_WAVEFORM_TYPES:
        raise FrontendError(f"{folder}: model_type {model_type!r} is not supported by the hf frontend "
                            f"(whisper, {', '.join(HF_WAVEFORM_TYPES)})")
    return model_type


def _load_hf(cls, folder, safetensors_only=False, **kwargs):
    """Loads float32 weights (fp16 checkpoints are cast: CPUs run fp16 slowly or not at all).

    ``safetensors_only``: a folder named by a model checkpoint (not by the user) may hold a
    pickled pytorch_model.bin, whose unpickling can run code; safetensors files cannot.
    """
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    if safetensors_only:
        kwargs["use_safetensors"] = True
    try:
        return cls.from_pretrained(str(folder), dtype=torch.float32, **kwargs)
    except (OSError, ValueError) as exc:
        if safetensors_only and not list(Path(folder).glob("*.safetensors")):
            raise UntrustedFrontendError(f"{folder} has no *.safetensors weights; a frontend folder named by a "
                                         f"model checkpoint is only loaded from safetensors (pickled .bin "
                                         f"weights can run code)") from exc
        raise FrontendError(f"cannot load the transformers model in {folder}: {exc}") from exc


class HFWaveformFrontend(Frontend):
    """wav2vec2 / HuBERT / WavLM (and kin) from a local transformers folder."""

    def __init__(self, spec, model_type, safetensors_only=False):
        from transformers import AutoModel

        folder = Path(spec["path"])
        # trust_remote_code stays off: a config.json's auto_map would otherwise import its code.
        model = _load_hf(AutoModel, folder, safetensors_only, trust_remote_code=False)
        config = model.config
        super().__init__(spec, SAMPLE_RATE / math.prod(config.conv_stride))
        self.model_type = model_type
        self.model = model.eval()
        self.min_samples = max(400, sum(config.conv_kernel))
        # Normalise as the model's feature extractor would: preprocessor_config.json when present,
        # else Wav2Vec2FeatureExtractor's default (do_normalize=True).
        prep = folder / "preprocessor_config.json"
        default = _read_json(prep).get("do_normalize", True) if prep.is_file() else True
        self.normalize = bool(spec.get("normalize", default))
        # Group-norm feature encoders (wav2vec2-base) normalise over time including padding, so
        # padding a batch changes the result; those run one utterance at a time.
        self.batched = getattr(config, "feat_extract_norm", "group") == "layer"
        self._probe()

    def _out_lengths(self, lengths):
        for kernel, stride in zip(self.model.config.conv_kernel, self.model.config.conv_stride):
            lengths = torch.div(lengths - kernel, stride, rounding_mode="floor") + 1
        return lengths

    def _run(self, wavs):
        if self.normalize:
            # zero mean, unit variance over the real samples (Wav2Vec2FeatureExtractor's rule)
            wavs = [(w - w.mean()) / torch.sqrt(w.var(unbiased=False) + 1e-7) for w in wavs]
        padded, lengths = pad_wavs(wavs)
        mask = None
        if len(wavs) > 1:
            mask = (torch.arange(padded.shape[1])[None, :] < lengths[:, None]).long().to(padded.device)
        out = self.model(padded, attention_mask=mask, output_hidden_states=True)
        return list(out.hidden_states), self._out_lengths(lengths)

    def _forward(self, wavs):
        if self.batched or len(wavs) == 1:
            return self._run(wavs)
        runs = [self._run([w]) for w in wavs]
        return _pad_cat([r[0] for r in runs]), torch.cat([r[1] for r in runs])


class WhisperFrontend(Frontend):
    """The encoder of a transformers Whisper model; hidden states numbered as transformers does.

    Layer 0 is the convolutional embedding plus positions, layers 1..N-1 the outputs of encoder
    blocks 1..N-1, and the last one the final block after the encoder's layer norm.
    ``whisper_mode: sliced`` feeds only the real log-mel frames with the positional embedding
    cut to that length (fast); ``padded`` feeds the standard 30-s input and keeps the real
    frames (faithful in the deep layers; see docs/ENVIRONMENT.md §6).
    """

    def __init__(self, spec, safetensors_only=False):
        from transformers import WhisperFeatureExtractor, WhisperModel

        mode = spec.get("whisper_mode", "sliced")
        model = _load_hf(WhisperModel, spec["path"], safetensors_only)
        super().__init__({**spec, "whisper_mode": mode}, frame_rate=50.0)
        self.model_type = "whisper"
        self.mode = mode
        self.encoder = model.get_encoder().eval()
        self.hop = 160
        self.feature_extractor = WhisperFeatureExtractor(feature_size=self.encoder.config.num_mel_bins,
                                                         sampling_rate=SAMPLE_RATE, hop_length=self.hop)
        self.max_samples = self.feature_extractor.n_samples  # 30 s
        self.mode = "sliced"  # the sizes are the same; probing two 30-s inputs would cost seconds
        self._probe()
        self.mode = mode

    def _mel(self, wav):
        """Log-mel [1, 80, S // 160], equal to the first frames of the 30-s padded input's log-mel."""
        # 400 trailing zeros make the last real STFT windows see zeros (as in the padded input)
        # instead of a reflection; the extra frames are then dropped.
        x = nn.functional.pad(wav, (0, 400)).cpu().numpy()
        mel = self.feature_extractor(x, sampling_rate=SAMPLE_RATE, padding=False, return_tensors="pt").input_features
        return mel[..., : wav.numel() // self.hop]

    def _encode(self, mel):
        """[B, 80, M] -> hidden states of every layer [B, ceil(M / 2), D]."""
        enc = self.encoder
        x = nn.functional.gelu(enc.conv1(mel))
        x = nn.functional.gelu(enc.conv2(x)).transpose(1, 2)
        x = x + enc.embed_positions.weight[: x.shape[1]]
        states = [x]
        for block in enc.layers:
            x = block(x, None)
            states.append(x)
        states[-1] = enc.layer_norm(x)
        return states

    def _forward(self, wavs):
        lengths = torch.tensor([math.ceil((w.numel() // self.hop) / 2) for w in wavs], dtype=torch.long)
        if self.mode == "padded":
            mel = self.feature_extractor([w.cpu().numpy() for w in wavs], sampling_rate=SAMPLE_RATE,
                                         return_tensors="pt").input_features
            layers = self._encode(mel.to(self.device))
            return [h[:, : int(lengths.max())] for h in layers], lengths
        # sliced: each utterance alone, so no padding enters the attention
        return _pad_cat([self._encode(self._mel(w).to(self.device)) for w in wavs]), lengths


# ---------------------------------------------------------------------------------------------
# openSMILE: the field's hand-crafted feature sets
# ---------------------------------------------------------------------------------------------
# feature_level in the spec -> opensmile.FeatureLevel member. "lld_de" (the deltas of the LLDs)
# exists for ComParE_2016 only; opensmile says so when it is asked for another set.
OPENSMILE_LEVELS = {"functionals": "Functionals", "lld": "LowLevelDescriptors",
                    "lld_de": "LowLevelDescriptors_Deltas"}


class OpenSmileFrontend(Frontend):
    """eGeMAPS, ComParE and the other openSMILE feature sets through the ``opensmile`` package.

    One "layer". ``feature_level: lld`` gives the low-level descriptors, 100 frames/s (10-ms hop);
    ``functionals`` gives the set's utterance statistics, one vector per utterance (T = 1): they
    are already pooled, so ``utterance_level`` is True and stage 1 stores them only with
    pooling ``mean``, which leaves a single vector as it is (docs/TRAINING.md, utterance-level
    features; the package: docs/ENVIRONMENT.md §8).
    """

    # Shorter clips make openSMILE fill the whole output with NaN (its 60-ms pitch window);
    # they are zero padded to this length, as the other frontends pad to theirs.
    min_samples = 960

    def __init__(self, spec):
        try:
            import opensmile
        except ImportError:
            raise FrontendError("the opensmile frontend needs the 'opensmile' package: "
                                "pip install -c tools/constraints.txt 'genser[opensmile]' "
                                "(tools/install.sh installs it)") from None
        level = spec.get("feature_level", "functionals")
        if level not in OPENSMILE_LEVELS:
            raise FrontendError(f"opensmile feature_level must be one of {sorted(OPENSMILE_LEVELS)}, "
                                f"got {level!r}")
        names = [f.name for f in opensmile.FeatureSet]
        if spec["feature_set"] not in names:
            raise FrontendError(f"unknown opensmile feature_set {spec['feature_set']!r}; known: {', '.join(names)}")
        try:
            smile = opensmile.Smile(feature_set=opensmile.FeatureSet[spec["feature_set"]],
                                    feature_level=opensmile.FeatureLevel[OPENSMILE_LEVELS[level]])
        except ValueError as exc:  # e.g. lld_de of eGeMAPSv02
            raise FrontendError(f"opensmile: {exc}") from None
        pooled = level == "functionals"
        # functionals: one vector per utterance, no frame rate
        super().__init__({**spec, "feature_level": level}, frame_rate=0.0 if pooled else 100.0)
        self.utterance_level = pooled
        self.smile = smile
        self.feature_names = list(smile.feature_names)
        self._probe()

    def _forward(self, wavs):
        import warnings

        runs = []
        for wav in wavs:
            with warnings.catch_warnings():
                # "Segment too short, filling with NaN": cannot happen above min_samples, and
                # any NaN is caught by check_finite naming the utterance
                warnings.simplefilter("ignore", UserWarning)
                frame = self.smile.process_signal(wav.cpu().numpy(), self.sample_rate)
            runs.append([torch.from_numpy(frame.to_numpy(dtype="float32", copy=True))[None]])
        lengths = torch.tensor([r[0].shape[1] for r in runs], dtype=torch.long)
        return _pad_cat(runs), lengths


# ---------------------------------------------------------------------------------------------
def frontend_spec(spec):
    """A spec dict (or an s3prl upstream name) checked and stripped of describe()'s record keys."""
    if isinstance(spec, str):
        spec = {"type": "s3prl", "name": spec}
    if not isinstance(spec, dict):
        raise FrontendError(f"frontend spec must be a mapping, got {type(spec).__name__}: {spec!r}")
    spec = {k: v for k, v in spec.items() if k not in INFO_KEYS and v is not None}
    kind = spec.get("type")
    if kind not in SPEC_KEYS:
        raise FrontendError(f"frontend type must be one of {sorted(SPEC_KEYS)}, got {kind!r} in {spec}")
    unknown = set(spec) - SPEC_KEYS[kind]
    if unknown:
        raise FrontendError(f"unknown keys {sorted(unknown)} in the {kind} frontend spec {spec} "
                            f"(known: {sorted(SPEC_KEYS[kind])})")
    need = SPEC_NEEDS[kind]
    if not spec.get(need):
        raise FrontendError(f"the {kind} frontend spec needs '{need}': {spec}")
    if spec.get("whisper_mode", "sliced") not in WHISPER_MODES:
        raise FrontendError(f"whisper_mode must be one of {WHISPER_MODES}, got {spec['whisper_mode']!r}")
    if "path" in spec:
        spec["path"] = str(spec["path"])
    return spec


def build_frontend(spec, device="cpu", safetensors_only=False):
    """Builds the frontend that ``spec`` describes, in eval mode on ``device``.

    ``safetensors_only``: transformers folders load only *.safetensors weights (for specs that
    come from a model checkpoint, see ``genser.trust.stored_frontend_spec``).
    """
    spec = frontend_spec(spec)
    if spec["type"] == "s3prl":
        frontend = S3PRLFrontend(spec)
    elif spec["type"] == "opensmile":
        frontend = OpenSmileFrontend(spec)
    else:
        if not Path(spec["path"]).is_dir():
            raise FrontendError(f"transformers model folder not found: {spec['path']}")
        model_type = _hf_model_type(spec["path"])
        if model_type == "whisper":
            frontend = WhisperFrontend(spec, safetensors_only)
        else:
            if "whisper_mode" in spec:
                raise FrontendError(f"whisper_mode is for Whisper models; {spec['path']} is {model_type}")
            frontend = HFWaveformFrontend(spec, model_type, safetensors_only)
    frontend = frontend.to(device).eval()
    logger.info("frontend %s: %d layers x %d dims, %.1f frames/s", spec, frontend.num_layers,
                frontend.hidden_size, frontend.frame_rate)
    return frontend
