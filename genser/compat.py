"""Run-time compatibility layer for torchaudio and s3prl, imported by genser before either.

Two problems are fixed here, in the user's environment, whatever installed it:

1. torchaudio wheels whose C++ extension cannot load (e.g. the PyPI torchaudio 2.11 wheel is
   linked against CUDA: ``OSError: libc10_cuda.so``) make ``import torchaudio`` fail, although its
   pure-Python parts (``compliance.kaldi``, ``functional.resample``, ``transforms``) need no
   extension.  A meta-path hook wraps the loader of ``torchaudio._extension`` so that a library
   that fails to load counts as "not built" (torchaudio's own pex code path) instead of aborting
   the import.  When the extension loads, nothing changes.
2. s3prl 0.4.18 uses names that torchaudio >= 2.9 removed (``set_audio_backend``,
   ``sox_effects``, ``info``; ``load``/``save`` now need torchcodec).  After torchaudio is
   imported, only the missing or unusable ones are supplied: the I/O backed by soundfile,
   ``sox_effects`` by name only (s3prl imports it; genser applies no effect).

Importing this module is cheap: torch and torchaudio are only touched when someone imports them.
"""
import importlib
import importlib.abc
import importlib.util
import logging
import sys
import types
from dataclasses import dataclass

logger = logging.getLogger(__name__)

# Why torchaudio's C++ extension did not load (None: it loaded, or torchaudio was not imported).
EXTENSION_ERROR = None
# Names this module added to torchaudio (for diagnostics and tests).
PATCHED = []

_SOX_HINT = (
    "genser.compat supplies torchaudio.sox_effects by name only, for s3prl's imports; install a "
    "torchaudio build with sox support to apply effects"
)


# ----------------------------------------------------------------------------------------------
# 1. Import hook
# ----------------------------------------------------------------------------------------------
class _WrappedLoader(importlib.abc.Loader):
    """Delegates to the real loader and adds genser's fix-ups around ``exec_module``."""

    def __init__(self, loader, fullname):
        self._loader = loader
        self._fullname = fullname

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        if self._fullname == "torchaudio._extension":
            _exec_extension_tolerant(self._loader, module)
        else:
            self._loader.exec_module(module)
            patch_torchaudio(module)

    def __getattr__(self, item):
        # get_resource_reader, get_source, is_package, ... of the real loader
        return getattr(self._loader, item)


class _TorchaudioFinder(importlib.abc.MetaPathFinder):
    """Finds ``torchaudio`` and ``torchaudio._extension`` with the other finders, wraps the loader."""

    _NAMES = ("torchaudio", "torchaudio._extension")

    def find_spec(self, fullname, path, target=None):
        if fullname not in self._NAMES:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                break
        else:
            return None
        if spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        spec.loader = _WrappedLoader(spec.loader, fullname)
        return spec


def _exec_extension_tolerant(loader, module):
    """Executes torchaudio/_extension/__init__.py with a ``_load_lib`` that returns False on OSError."""
    try:
        utils = importlib.import_module("torchaudio._extension.utils")
        real_load_lib = utils._load_lib
    except (ImportError, AttributeError):
        loader.exec_module(module)  # unknown layout: leave torchaudio's behaviour alone
        return

    def load_lib(lib):
        global EXTENSION_ERROR
        try:
            return real_load_lib(lib)
        except OSError as exc:
            cause = f" ({exc.__cause__})" if exc.__cause__ is not None else ""
            EXTENSION_ERROR = f"{exc}{cause}"
            logger.debug("torchaudio C++ extension %s not loaded: %s", lib, EXTENSION_ERROR)
            return False

    utils._load_lib = load_lib
    try:
        loader.exec_module(module)
    finally:
        utils._load_lib = real_load_lib
        if getattr(module, "_load_lib", None) is load_lib:
            module._load_lib = real_load_lib  # later explicit loads report the real error


_FINDER = _TorchaudioFinder()


def install():
    """Installs the import hook (idempotent) and patches torchaudio if it is already imported."""
    if not any(isinstance(f, _TorchaudioFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _FINDER)
    if "torchaudio" in sys.modules:
        patch_torchaudio(sys.modules["torchaudio"])
    else:
        # A failed earlier import leaves submodules behind; drop them so a retry starts clean.
        for name in [n for n in sys.modules if n.startswith("torchaudio.")]:
            del sys.modules[name]


# ----------------------------------------------------------------------------------------------
# 2. Names s3prl needs
# ----------------------------------------------------------------------------------------------
def _has_torchcodec():
    try:
        return importlib.util.find_spec("torchcodec") is not None
    except (ImportError, ValueError):
        return False


def patch_torchaudio(ta):
    """Adds to module ``ta`` (torchaudio) only the audio I/O names that are missing or unusable."""
    if getattr(ta, "_genser_patched", False):
        return ta
    ta._genser_patched = True
    # torchaudio >= 2.9: load/save forward to torchcodec, which is usually absent (or CUDA-linked
    # and unloadable).  soundfile first; torchcodec only for formats soundfile cannot handle.
    codec = getattr(ta, "load_with_torchcodec", None) is not None
    if not hasattr(ta, "load") or codec:
        _set(ta, "load", _with_fallback(sf_load, getattr(ta, "load", None) if codec else None))
    if not hasattr(ta, "save") or codec:
        _set(ta, "save", _with_fallback(sf_save, getattr(ta, "save", None) if codec else None))
    if not hasattr(ta, "info"):
        _set(ta, "info", sf_info)
    if not hasattr(ta, "AudioMetaData"):
        _set(ta, "AudioMetaData", AudioMetaData)
    if not hasattr(ta, "load_wav"):
        _set(ta, "load_wav", sf_load_wav)
    if not hasattr(ta, "set_audio_backend"):
        _set(ta, "set_audio_backend", set_audio_backend)
    if not hasattr(ta, "get_audio_backend"):
        _set(ta, "get_audio_backend", lambda: "soundfile")
    if not hasattr(ta, "list_audio_backends"):
        _set(ta, "list_audio_backends", lambda: ["soundfile"])
    if not hasattr(ta, "sox_effects") and _find_submodule("torchaudio.sox_effects") is None:
        mod = _make_sox_effects_module()
        sys.modules["torchaudio.sox_effects"] = mod
        _set(ta, "sox_effects", mod)
    return ta


def _with_fallback(primary, fallback):
    """``primary`` (soundfile); on a soundfile error, ``fallback`` when torchcodec is importable."""
    if fallback is None:
        return primary

    def call(*args, **kwargs):
        import soundfile as sf

        try:
            return primary(*args, **kwargs)
        except sf.LibsndfileError:
            if not _has_torchcodec():
                raise
            return fallback(*args, **kwargs)

    call.__name__, call.__doc__ = primary.__name__, primary.__doc__
    return call


def _set(module, name, value):
    setattr(module, name, value)
    PATCHED.append(name)


def _find_submodule(name):
    try:
        return importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None


def set_audio_backend(backend):
    """Accepts any backend name: genser's torchaudio I/O always goes through soundfile."""
    logger.debug("torchaudio.set_audio_backend(%r) ignored: genser.compat uses soundfile", backend)


@dataclass
class AudioMetaData:
    """The fields of torchaudio's former ``info()`` result."""

    sample_rate: int
    num_frames: int
    num_channels: int
    bits_per_sample: int
    encoding: str


_BITS = {"PCM_S8": 8, "PCM_U8": 8, "PCM_16": 16, "PCM_24": 24, "PCM_32": 32, "FLOAT": 32,
         "DOUBLE": 64, "ULAW": 8, "ALAW": 8}
_ENCODING = {"PCM_S8": "PCM_S", "PCM_U8": "PCM_U", "PCM_16": "PCM_S", "PCM_24": "PCM_S",
             "PCM_32": "PCM_S", "FLOAT": "PCM_F", "DOUBLE": "PCM_F", "ULAW": "ULAW", "ALAW": "ALAW"}


def sf_info(uri, format=None, buffer_size=4096, backend=None):
    """torchaudio.info through soundfile."""
    import soundfile as sf

    i = sf.info(uri)
    return AudioMetaData(sample_rate=i.samplerate, num_frames=i.frames, num_channels=i.channels,
                         bits_per_sample=_BITS.get(i.subtype, 0),
                         encoding=_ENCODING.get(i.subtype, i.subtype or "UNKNOWN"))


def sf_load(uri, frame_offset=0, num_frames=-1, normalize=True, channels_first=True, format=None,
            buffer_size=4096, backend=None):
    """torchaudio.load through soundfile: returns (Tensor [C, T] (or [T, C]), sample_rate)."""
    import soundfile as sf
    import torch

    dtype = "float32"
    if not normalize:
        subtype = sf.info(uri).subtype
        dtype = {"PCM_16": "int16", "PCM_32": "int32"}.get(subtype, "float32")
    stop = None if num_frames is None or num_frames < 0 else frame_offset + num_frames
    data, sr = sf.read(uri, start=frame_offset, stop=stop, dtype=dtype, always_2d=True)
    wav = torch.from_numpy(data)  # [T, C]
    return (wav.t().contiguous() if channels_first else wav), sr


def sf_load_wav(uri, channels_first=True):
    """The old torchaudio.load_wav: float tensor on the 16-bit integer scale."""
    import soundfile as sf
    import torch

    data, sr = sf.read(uri, dtype="int16", always_2d=True)
    wav = torch.from_numpy(data.astype("float32"))
    return (wav.t().contiguous() if channels_first else wav), sr


def sf_save(uri, src, sample_rate, channels_first=True, format=None, encoding=None,
            bits_per_sample=None, buffer_size=4096, backend=None, compression=None):
    """torchaudio.save through soundfile (16-bit PCM unless bits_per_sample/encoding say float)."""
    import soundfile as sf

    wav = src.detach().cpu()
    if wav.dim() == 1:
        wav = wav.unsqueeze(0 if channels_first else 1)
    data = (wav.t() if channels_first else wav).numpy()
    subtype = {8: "PCM_U8", 16: "PCM_16", 24: "PCM_24", 32: "PCM_32"}.get(bits_per_sample, "PCM_16")
    if encoding == "PCM_F" or (bits_per_sample is None and str(data.dtype) == "float64"):
        subtype = "FLOAT" if bits_per_sample in (None, 32) else "DOUBLE"
    sf.write(uri, data, int(sample_rate), subtype=subtype, format=format)


# ----------------------------------------------------------------------------------------------
# sox_effects: the names s3prl imports at load time (s3prl.hub -> mos_prediction/expert.py);
# genser applies no sox effect, so calling one says so.
# ----------------------------------------------------------------------------------------------
def apply_effects_tensor(tensor, sample_rate, effects, channels_first=True):
    """Stand-in for torchaudio.sox_effects.apply_effects_tensor: raises NotImplementedError."""
    raise NotImplementedError(f"sox effects {[e[0] for e in effects]} are not available: " + _SOX_HINT)


def apply_effects_file(path, effects, normalize=True, channels_first=True, format=None):
    """Stand-in for torchaudio.sox_effects.apply_effects_file: raises NotImplementedError."""
    raise NotImplementedError(f"sox effects {[e[0] for e in effects]} on {path} are not available: "
                              + _SOX_HINT)


def _make_sox_effects_module():
    mod = types.ModuleType("torchaudio.sox_effects",
                           "Names-only stand-in for torchaudio.sox_effects (genser.compat).")
    mod.apply_effects_tensor = apply_effects_tensor
    mod.apply_effects_file = apply_effects_file
    mod.__file__ = __file__
    return mod


# ----------------------------------------------------------------------------------------------
def import_torchaudio():
    """Imports torchaudio through the hook; raises ImportError with a hint if it still fails."""
    install()
    try:
        return importlib.import_module("torchaudio")
    except Exception as exc:  # noqa: BLE001 -- re-raised with context
        raise ImportError(
            f"genser could not import torchaudio ({type(exc).__name__}: {exc}); install a torchaudio "
            "matching your torch, e.g. `tools/install.sh` or `pip install torchaudio` under "
            "tools/constraints.txt") from exc


def import_s3prl():
    """Returns the s3prl module, imported after torchaudio has been made usable."""
    import_torchaudio()
    s3prl = importlib.import_module("s3prl")
    importlib.import_module("s3prl.nn")
    return s3prl


install()
