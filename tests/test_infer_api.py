"""genser.inference: the library API (Classifier, Prediction, Timeline), speaker grouping for
per-speaker CMVN models, the trust policy by file kind (genser.trust), export checksums and
ONNX answers checked finite, and genser-infer's progress bars."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml

from genser.bin import export, infer
from genser.checkpoint import save_model
from genser.inference import Classifier, InferenceError, Prediction, model_norm
from genser.models import build_model

LABELS = ["neutral", "happy", "angry", "sad"]


def tone(path, freq=220.0, seconds=0.6, sr=16000, amp=0.3):
    t = np.arange(int(seconds * sr)) / sr
    sf.write(path, (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32), sr, subtype="PCM_16")
    return str(path)


def fbank_model(path, *, norm=None, old_norm=False, temperature=None, kind="classifier"):
    """A tiny model on s3prl fbank (240 dims, mean pooled); ``norm``: per-speaker CMVN moments,
    in extra["norm"] (the new place) or, with ``old_norm``, extra["feats"]["cmvn"]."""
    torch.manual_seed(0)
    model = build_model({"model": kind}, LABELS, input_dim=240, num_layers=1)
    meta = {"frontend": {"type": "s3prl", "name": "fbank"}, "layers": [0], "num_layers": 1, "dim": 240,
            "pooling": "mean", "dtype": "float32"}
    extra = {"feats": meta}
    if norm is not None:
        if old_norm:
            meta["cmvn"] = norm
        else:
            extra["norm"] = {**norm, "kind": "speaker"}
    if temperature is not None:  # as genser-train --calibrate inner leaves it: on the model
        model.temperature = temperature
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    save_model(path, model, extra=extra)
    return Path(path)


def cmvn(relevance=2.0):
    rng = np.random.default_rng(0)
    return {"norm_vars": True, "relevance": relevance, "mean": rng.normal(size=(1, 240)).astype(np.float32).tolist(),
            "var": (1 + rng.random(size=(1, 240))).astype(np.float32).tolist()}


# ---- the API -------------------------------------------------------------------------------
def test_classify_file_files_and_waveform_agree_and_say_label_posteriors_confidence(tmp_path):
    clf = Classifier.from_pretrained(fbank_model(tmp_path / "m.pt"))
    a, b = tone(tmp_path / "a.wav"), tone(tmp_path / "b.wav", freq=500, amp=0.1)
    pred = clf.classify_file(a)
    assert isinstance(pred, Prediction) and pred.path == a and pred.label in LABELS
    assert list(pred.posteriors) == LABELS and sum(pred.posteriors.values()) == pytest.approx(1, abs=1e-5)
    assert pred.confidence == pytest.approx(max(pred.posteriors.values()))  # no stored temperature: T = 1
    assert pred.label == max(pred.posteriors, key=pred.posteriors.get)
    both = clf.classify_files([a, b])
    assert both[0].posteriors == pytest.approx(pred.posteriors, abs=1e-6) and both[1].path == b
    # a waveform: as its file; at another rate it is resampled to the frontend's, as a file is
    x, _ = sf.read(a, dtype="float32")
    wave = clf.classify(x, 16000)
    assert wave.path is None and wave.posteriors == pytest.approx(pred.posteriors, abs=1e-6)
    c = tone(tmp_path / "c.wav", sr=22050)
    x, _ = sf.read(c, dtype="float32")
    assert clf.classify(x, 22050).posteriors == pytest.approx(clf.classify_file(c).posteriors, abs=1e-4)
    # the same file through genser-infer gives the same table
    out = subprocess.run([sys.executable, "-m", "genser.bin.infer", "--quiet", "--model", str(tmp_path / "m.pt"), a],
                         capture_output=True, text=True, timeout=120)
    row = out.stdout.splitlines()[1].split("\t")
    assert row[1] == pred.label and [float(v) for v in row[2:]] == pytest.approx(list(pred.posteriors.values()),
                                                                                abs=1e-4)


def test_stored_temperature_calibrates_the_posteriors_not_the_decision(tmp_path):
    """The model applies its temperature once (decode, genser-infer and ONNX alike): posteriors
    and confidence are softmax(z / T), the decision is unchanged."""
    wav = tone(tmp_path / "a.wav")
    plain = Classifier.from_pretrained(fbank_model(tmp_path / "m.pt")).classify_file(wav)
    hot = Classifier.from_pretrained(fbank_model(tmp_path / "t.pt", temperature=3.0))
    assert hot.temperature == 3.0 and hot.model.temperature == 3.0
    pred = hot.classify_file(wav)
    p = np.array(list(plain.posteriors.values()))
    scaled = np.exp(np.log(p) / 3.0) / np.exp(np.log(p) / 3.0).sum()
    assert pred.label == plain.label
    assert list(pred.posteriors.values()) == pytest.approx(list(scaled), rel=1e-4)
    assert pred.confidence == pytest.approx(scaled.max(), rel=1e-4) and pred.confidence < plain.confidence


def test_errors_are_exceptions_naming_the_file_not_system_exit(tmp_path):
    model = fbank_model(tmp_path / "m.pt")
    clf = Classifier.from_pretrained(model)
    missing = str(tmp_path / "missing.wav")
    with pytest.raises(InferenceError, match="missing.wav"):
        clf.classify_file(missing)
    seen = []
    out = clf.classify_files([missing, tone(tmp_path / "a.wav")], on_error=lambda u, p, e: seen.append((p, str(e))))
    assert out[0] is None and out[1].label in LABELS and seen[0][0] == missing and "missing.wav" in seen[0][1]
    with pytest.raises(InferenceError, match="checkpoint not found"):
        Classifier.from_pretrained(tmp_path / "nope.pt")
    with pytest.raises(InferenceError, match=r"hop must be positive"):
        clf.timeline(tone(tmp_path / "b.wav"), "window", hop=0)
    assert issubclass(InferenceError, ValueError)


def test_timeline_json_names_model_nsteps_eta_and_version(tmp_path):
    import genser

    model = fbank_model(tmp_path / "m.pt", kind="genser")
    wav = tone(tmp_path / "long.wav", seconds=4.0)
    clf = Classifier.from_pretrained(model, nsteps=2, eta=0.0)
    timeline = clf.timeline(wav, "window", window=2, hop=2)
    assert [(s.start, s.end) for s in timeline.segments] == [(0.0, 2.0), (2.0, 4.0)]
    timeline.write(tmp_path / "out", "long")
    info = json.loads((tmp_path / "out" / "long.json").read_text())
    assert info["model"] == str(model) and info["nsteps"] == 2 and info["eta"] == 0.0
    assert info["genser_version"] == genser.__version__ and info["segment"]["mode"] == "window"
    assert set(info["segments"][0]) == {"start", "end", "label", "confidence", "scores"}
    infer.main(["--model", str(model), "--nsteps", "3", "--segment", "window", "--window", "2", "--hop", "2",
                "--out_dir", str(tmp_path / "cli"), wav])
    info = json.loads((tmp_path / "cli" / "long.json").read_text())
    assert info["nsteps"] == 3 and info["model"] == str(model) and "genser_version" in info


def test_genser_infer_shows_progress_on_stderr_unless_quiet(tmp_path):
    model = fbank_model(tmp_path / "m.pt")
    wavs = [tone(tmp_path / f"{i}.wav", freq=200 + 50 * i) for i in range(2)]
    rec = tone(tmp_path / "rec.wav", seconds=3.0)
    cmd = [sys.executable, "-m", "genser.bin.infer", "--model", str(model)]
    shown = subprocess.run(cmd + wavs, capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0 and "files: 100%" in shown.stderr and "2/2" in shown.stderr
    seg = subprocess.run(cmd + ["--segment", "window", "--window", "1", "--hop", "1", rec], capture_output=True,
                         text=True, timeout=120)
    assert seg.returncode == 0 and "segments" in seg.stderr and "recordings: 100%" in seg.stderr
    quiet = subprocess.run(cmd + ["--quiet"] + wavs, capture_output=True, text=True, timeout=120)
    assert "%|" not in quiet.stderr and quiet.stdout == shown.stdout


# ---- speaker grouping ----------------------------------------------------------------------
def test_model_norm_reads_the_new_and_the_old_place():
    assert model_norm({"norm": {"relevance": 1}, "feats": {"cmvn": {"relevance": 2}}}) == {"relevance": 1}
    assert model_norm({"feats": {"cmvn": {"relevance": 2}}}) == {"relevance": 2}
    assert model_norm({"feats": {}}) is None and model_norm({}) is None


@pytest.mark.parametrize("old_norm", [False, True])
def test_clip_speaker_and_utt2spk_protocols(tmp_path, old_norm):
    model = fbank_model(tmp_path / "m.pt", norm=cmvn(), old_norm=old_norm)
    clf = Classifier.from_pretrained(model)
    assert clf.norm["relevance"] == 2.0
    a1, a2 = tone(tmp_path / "a1.wav", 200), tone(tmp_path / "a2.wav", 260, amp=0.2)
    b1, b2 = tone(tmp_path / "b1.wav", 900, amp=0.05), tone(tmp_path / "b2.wav", 1200, amp=0.08)
    files = [a1, a2, b1, b2]
    clip = clf.classify_files(files)
    assert clip[0].posteriors == pytest.approx(clf.classify_file(a1).posteriors)  # each file alone
    together = clf.classify_files(files, speaker="x")
    assert together[0].posteriors != pytest.approx(clip[0].posteriors, abs=1e-4)  # the group's moments count
    by_spk = clf.classify_files(files, utt2spk={"a1.wav": "A", "a2": "A", b1: "B", "b2.wav": "B"})
    only_a = clf.classify_files([a1, a2], speaker="A")
    assert by_spk[0].posteriors == pytest.approx(only_a[0].posteriors)
    assert by_spk[2].posteriors == pytest.approx(clf.classify_files([b1, b2], speaker="B")[0].posteriors)
    with pytest.raises(InferenceError, match="b2.wav: no speaker"):
        clf.classify_files(files, utt2spk={"a1": "A", "a2": "A", "b1": "B"})
    # genser-infer: --utt2spk, --same_speaker and its old spelling --cmvn_unit all
    spk = tmp_path / "spk.txt"
    spk.write_text(f"a1.wav A\na2.wav A\nb1.wav B\n{b2} B\n")

    def table(*flags):
        out = subprocess.run([sys.executable, "-m", "genser.bin.infer", "--quiet", "--model", str(model), *flags,
                              *files], capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        return [[float(v) for v in line.split("\t")[2:]] for line in out.stdout.splitlines()[1:]]

    assert table("--utt2spk", str(spk))[0] == pytest.approx(list(by_spk[0].posteriors.values()), abs=1e-4)
    assert table("--same_speaker") == table("--cmvn_unit", "all")
    assert table("--same_speaker")[3] == pytest.approx(list(together[3].posteriors.values()), abs=1e-4)
    assert table()[0] == pytest.approx(list(clip[0].posteriors.values()), abs=1e-4)


# ---- trust by what a file is ---------------------------------------------------------------
def hf_model(tmp_path, folder):
    """A model.pt in exp/ naming the transformers folder ``folder`` by absolute path."""
    from test_bad_inputs import save_genser_model

    return save_genser_model(tmp_path / "exp" / "m.pt", {"type": "hf", "path": str(folder)}, 3, 32)


def test_a_safetensors_folder_elsewhere_loads_and_code_or_pickles_do_not(tmp_path):
    from test_bad_inputs import evil_checkpoint
    from test_frontend import save_tiny_hf

    folder = tmp_path / "elsewhere" / "w2v"
    save_tiny_hf(folder, "wavlm")
    model = hf_model(tmp_path, folder)
    wav = tone(tmp_path / "a.wav")
    assert Classifier.from_pretrained(model).classify_file(wav).label in LABELS  # outside exp/, no opt-in
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "auto_map": {"AutoModel": "evil.Model"}}))
    with pytest.raises(InferenceError, match="auto_map"):
        Classifier.from_pretrained(model)
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "evil.py").write_text("raise SystemExit('ran')\n")
    with pytest.raises(InferenceError, match=r"Python files \(evil.py\)"):
        Classifier.from_pretrained(model)
    (folder / "evil.py").unlink()
    marker = tmp_path / "PWNED"
    for f in folder.glob("*.safetensors"):
        f.unlink()
    evil_checkpoint(folder / "pytorch_model.bin", marker)
    with pytest.raises(InferenceError, match=f"{model}.*safetensors"):
        Classifier.from_pretrained(model)
    with pytest.raises(SystemExit, match="safetensors"):
        infer.main(["--model", str(model), wav])
    assert not marker.exists()


@pytest.mark.corpus
def test_whisper_base_folder_outside_the_model_folder_loads_without_opt_in(tmp_path, whisper_dir):
    """The recipe's case (issue 20): the model names the whisper-base folder of db.sh by absolute
    path, far from exp/; safetensors only, so it loads with neither --frontend_path nor --trust_frontend."""
    assert list(whisper_dir.glob("*.safetensors")) and not list(whisper_dir.glob("*.bin"))
    torch.manual_seed(0)
    model = build_model({"model": "genser"}, LABELS, input_dim=512, num_layers=2)
    meta = {"frontend": {"type": "hf", "path": str(whisper_dir), "whisper_mode": "sliced"}, "layers": [0, 6],
            "num_layers": 2, "dim": 512, "pooling": "mean", "dtype": "float32"}
    path = tmp_path / "exp" / "fold_03" / "model.pt"
    path.parent.mkdir(parents=True)
    save_model(path, model, extra={"feats": meta})
    assert not whisper_dir.resolve().is_relative_to(path.parent)
    wav = tone(tmp_path / "a.wav", seconds=1.0)
    clf = Classifier.from_pretrained(path)
    assert clf.frontend.num_layers == 7 and clf.classify_file(wav).label in LABELS
    out = subprocess.run([sys.executable, "-m", "genser.bin.infer", "--quiet", "--model", str(path), wav],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.splitlines()[1].split("\t")[0] == wav


# ---- export checksums and ONNX answers -----------------------------------------------------
@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    pytest.importorskip("onnxruntime", reason="the onnx extra is not installed")
    root = tmp_path_factory.mktemp("export")
    model = fbank_model(root / "exp" / "m.pt", kind="genser", norm=cmvn())
    export.main(["--model", str(model), "--out_dir", str(root / "pkg"), "--licence", "MIT", "--onnx", "--nsteps", "1"])
    return root / "pkg"


def test_export_records_sha256_of_every_file_and_the_normalisation(exported):
    import hashlib

    info = yaml.safe_load((exported / "export.yaml").read_text())
    assert sorted(info["files"]) == ["README.md", "head_nsteps1.onnx", "model.pt"]
    for name, digest in info["files"].items():
        assert hashlib.sha256((exported / name).read_bytes()).hexdigest() == digest
    card = (exported / "README.md").read_text()
    assert "per-speaker CMVN (mean and variance, relevance 2)" in card and "normalised alone" in card
    assert "[batch, frames, 1, 240]" in card and "must be normalised first" in card
    assert info["norm"] == {"kind": "speaker", "norm_vars": True, "relevance": 2.0}
    assert Classifier.from_pretrained(exported).classify_file(tone(exported.parent / "a.wav")).label in LABELS


@pytest.mark.parametrize("name", ["head_nsteps1.onnx", "model.pt"])
def test_a_tampered_export_file_is_refused_naming_it(exported, tmp_path, name):
    import shutil

    from genser.onnx_head import ExportError, OnnxHead

    pkg = tmp_path / "pkg"
    shutil.copytree(exported, pkg)
    data = bytearray((pkg / name).read_bytes())
    mid = len(data) // 2
    data[mid:mid + 64] = bytes(b ^ 0xFF for b in data[mid:mid + 64])  # 64 flipped bytes
    (pkg / name).write_bytes(bytes(data))
    with pytest.raises(InferenceError, match=f"{pkg / name}: its sha256 differs"):
        Classifier.from_pretrained(pkg)
    with pytest.raises(SystemExit, match=f"{pkg / name}: its sha256 differs"):
        infer.main(["--model", str(pkg / "model.pt"), tone(tmp_path / "a.wav")])
    if name.endswith(".onnx"):
        with pytest.raises(ExportError, match=f"{pkg / name}: its sha256 differs"):
            OnnxHead(pkg / name)


def test_an_onnx_head_with_a_corrupted_weight_does_not_answer(exported, tmp_path):
    """A graph outside an export (no checksum to hold it to) that gives NaN: refused at the answer."""
    import onnx
    from onnx import numpy_helper

    from genser.onnx_head import ExportError, OnnxHead

    graph = onnx.load(str(exported / "head_nsteps1.onnx"))
    good = OnnxHead(exported / "head_nsteps1.onnx")
    assert (good.num_layers, good.dim) == (1, 240)
    feats, lengths = np.zeros((2, 1, 1, 240), np.float32), np.ones(2, np.int64)
    assert np.isfinite(good(feats, lengths)).all()
    init = max(graph.graph.initializer, key=lambda t: int(np.prod(t.dims)))  # the largest weight matrix
    init.CopyFrom(numpy_helper.from_array(np.full(tuple(init.dims), np.nan, np.float32), init.name))
    onnx.save(graph, str(tmp_path / "bad.onnx"))
    with pytest.raises(ExportError, match="bad.onnx: the graph gave non-finite scores"):
        OnnxHead(tmp_path / "bad.onnx")(feats, lengths)
