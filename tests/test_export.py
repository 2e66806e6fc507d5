"""genser-export and the ONNX head on synthetic models (the EmoDB checks are in test_emodb_recipe.py)."""
import numpy as np
import pytest
import torch
import yaml

from genser import export as export_lib
from genser.bin import export, infer
from genser.frontend import build_frontend
from genser.checkpoint import load_model, save_model
from genser.models import build_model
from genser.onnx_head import ExportError, ScoreHead

LABELS = ["anger", "happiness", "neutral", "sadness"]
CONFIGS = {
    "utterance": {},
    # frames of unequal length through a transformer, attentive pooling, per-frame transport
    "frames": {"encoder": {"type": "transformer", "layers": 2}, "pooling": "attentive",
               "denoiser": {"level": "frame"}},
    "conv_weighted": {"encoder": {"type": "conv"}, "featurizer": {"combine": "weighted", "normalize": "layer"}},
}


def tiny_model(kind, config=None, layers=2, dim=6):
    torch.manual_seed(0)
    model = build_model({**(config or {}), "model": kind}, LABELS, input_dim=dim, num_layers=layers)
    # non-trivial normalisation statistics, as training leaves them
    if hasattr(model.featurizer, "running_mean"):
        model.featurizer.running_mean.uniform_(-1, 1)
        model.featurizer.running_var.uniform_(0.5, 2)
    return model.eval()


@pytest.mark.parametrize("name", sorted(CONFIGS))
@pytest.mark.parametrize("kind, nsteps", [("genser", 1), ("genser", 3), ("classifier", None)])
def test_onnx_head_matches_torch(tmp_path, name, kind, nsteps):
    pytest.importorskip("onnxruntime", reason="the onnx extra is not installed")
    from genser.onnx_head import OnnxHead, export_head

    model = tiny_model(kind, CONFIGS[name])
    path = tmp_path / "head.onnx"
    head = export_head(model, path, nsteps=nsteps or 1)
    assert not model.training and not head.training  # the export leaves the model as it was
    gen = torch.Generator().manual_seed(1)
    # another batch size and frame count than the trace's, unequal lengths
    feats, lengths = 3 * torch.randn(5, 11, 2, 6, generator=gen), torch.tensor([11, 1, 6, 9, 2])
    onnx_scores = OnnxHead(path)(feats.numpy(), lengths.numpy())
    with torch.no_grad():
        torch_scores = head(feats, lengths).numpy()  # the torch head itself, as exported
    np.testing.assert_allclose(torch_scores, model.predict(feats, lengths, nsteps=nsteps or 1)["scores"].numpy(),
                               atol=1e-6, rtol=0)
    assert onnx_scores.shape == (5, len(LABELS))
    np.testing.assert_allclose(onnx_scores, torch_scores, atol=1e-4, rtol=0)
    np.testing.assert_allclose(onnx_scores.sum(1), 1.0, atol=1e-5)


def test_gen_ser_graphs_differ_with_the_number_of_steps(tmp_path):
    pytest.importorskip("onnxruntime", reason="the onnx extra is not installed")
    from genser.onnx_head import OnnxHead, export_head

    model = tiny_model("genser")
    feats, lengths = torch.randn(4, 1, 2, 6), torch.ones(4, dtype=torch.long)
    scores = {}
    for n in (1, 3):
        export_head(model, tmp_path / f"n{n}.onnx", nsteps=n)
        scores[n] = OnnxHead(tmp_path / f"n{n}.onnx")(feats.numpy(), lengths.numpy())
    # N is baked into each unrolled graph: the two give different (each correct) posteriors
    assert np.abs(scores[1] - scores[3]).max() > 1e-4


def test_a_sampler_that_starts_from_noise_is_refused():
    model = tiny_model("genser")

    class NoisyStart:
        def std(self, t):
            return 0.5

    model.schedule = NoisyStart()
    with pytest.raises(ExportError, match="starts from noise"):
        ScoreHead(model, nsteps=2)
    with pytest.raises(ExportError, match="fixed number of sampler steps"):
        ScoreHead(tiny_model("genser"), nsteps=0)


# ---------------------------------------------------------------------------------------------
def recipe_layout(root, kind, frontend):
    """A model.pt where ser.sh puts one (egs/toy/exp/<exp>/seed0/<kind>/fold_03), with the
    experiment's config.yaml, train.list, data dir and RESULTS.md."""
    recipe = root / "egs" / "toy"
    fold_dir = recipe / "exp" / "emotion_toy" / "seed0" / kind / "fold_03"
    fold_dir.mkdir(parents=True)
    data = recipe / "data" / "all"
    data.mkdir(parents=True)
    utts = [f"{spk}u{i}" for spk in ("03", "08", "09") for i in range(3)]
    (data / "utt2spk").write_text("".join(f"{u} {u[:2]}\n" for u in utts))
    (fold_dir / "train.list").write_text("".join(f"{u}\n" for u in utts if not u.startswith("03")))
    (fold_dir.parent / "config.yaml").write_text(yaml.safe_dump({"data_dir": "data/all", "epochs": 4, "seed": 0}))
    (recipe / "exp" / "emotion_toy" / "RESULTS.md").write_text(
        "# Results\n\n| System | Setting | UA (seeds) |\n| --- | --- | ---: |\n"
        "| genser | nsteps1_eta0.0 | 61.2 ± 1.0 |\n| classifier | argmax | 58.9 ± 0.4 |\n")
    meta = {"frontend": frontend.describe(), "layers": [0], "num_layers": 1, "dim": frontend.hidden_size,
            "pooling": "meanstd", "dtype": "float32"}
    model = tiny_model(kind, layers=2, dim=frontend.hidden_size)
    save_model(fold_dir / "model.pt", model, extra={"feats": meta, "task": "emotion", "fold": "03", "epochs": 4,
                                                    "averaged_epochs": [3, 4], "identity": "0123abcd"})
    return fold_dir / "model.pt"


@pytest.fixture(scope="module")
def fbank_frontend():
    return build_frontend("fbank_no_cmvn")


def test_export_is_self_contained_and_runs_in_genser_infer(tmp_path, fbank_frontend, capsys):
    pytest.importorskip("onnxruntime", reason="the onnx extra is not installed")
    model_path = recipe_layout(tmp_path, "genser", fbank_frontend)
    out = tmp_path / "shipped" / "toy_genser"
    argv = ["--model", str(model_path), "--out_dir", str(out), "--licence", "CC-BY-4.0", "--onnx", "--nsteps", "1 3"]
    export.main(argv)
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "export.yaml", "head_nsteps1.onnx",
                                                     "head_nsteps3.onnx", "model.pt"]
    card = (out / "README.md").read_text()
    for text in ("licence: CC-BY-4.0", "training corpus: toy", "test fold `03` held out on 6 utterances of 2 "
                 "speakers (08 09)", "labels (4): anger, happiness, neutral, sadness", "name: fbank_no_cmvn",
                 "| genser | nsteps1_eta0.0 | 61.2 ± 1.0 |", "head_nsteps3.onnx | 3 |",
                 "posteriors: the barycentric coordinates of the sample in the codes (floor 0.003), temperature 1 "
                 "(not calibrated)"):
        assert text in card, text
    assert "| classifier |" not in card
    info = yaml.safe_load((out / "export.yaml").read_text())
    assert info["kind"] == "genser" and [h["nsteps"] for h in info["onnx"]] == [1, 3]
    assert all(h["max_diff"] <= 1e-4 for h in info["onnx"])
    # the shipped model.pt classifies a file as the original does
    wav = tmp_path / "a.wav"
    from corpus_fixtures import write_wav

    write_wav(wav, dur=0.8)
    capsys.readouterr()
    tables = []
    for model in (model_path, out / "model.pt"):
        infer.main(["--model", str(model), str(wav)])
        tables.append(capsys.readouterr().out)
    assert tables[0] == tables[1] and tables[0].splitlines()[0].split("\t")[2:] == LABELS
    # re-running replaces the earlier export; a folder that is not one is refused
    export.main(argv[:-3] + ["--no_check"])
    assert not (out / "head_nsteps1.onnx").exists()
    assert sorted(p.name for p in out.parent.iterdir()) == ["toy_genser"]  # no temp folder left
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(SystemExit, match="is not a genser export"):
        export.main(["--model", str(model_path), "--out_dir", str(tmp_path / "other"), "--licence", "MIT"])
    assert (tmp_path / "other" / "notes.txt").read_text() == "mine"


def test_classifier_export_and_transformers_frontend_is_copied(tmp_path, fbank_frontend):
    model_path = recipe_layout(tmp_path, "classifier", fbank_frontend)
    out = tmp_path / "c"
    export.main(["--model", str(model_path), "--out_dir", str(out), "--licence", "MIT", "--no_check"])
    assert "| classifier | argmax | 58.9 ± 0.4 |" in (out / "README.md").read_text()
    # a transformers folder named relative to the recipe (as stage 1 records it) travels along
    # with its safetensors only, and the spec points inside the export
    model, extra = load_model(model_path)
    hf = tmp_path / "egs" / "models" / "enc"
    hf.mkdir(parents=True)
    for name, text in (("config.json", "{}"), ("model.safetensors", "w"), ("pytorch_model.bin", "pickle")):
        (hf / name).write_text(text)
    extra["feats"]["frontend"] = {"type": "hf", "path": "../models/enc"}
    save_model(model_path, model, extra=extra)
    export.main(["--model", str(model_path), "--out_dir", str(out), "--licence", "MIT", "--no_check"])
    assert sorted(p.name for p in (out / "frontend" / "enc").iterdir()) == ["config.json", "model.safetensors"]
    assert load_model(out / "model.pt")[1]["feats"]["frontend"]["path"] == "frontend/enc"


@pytest.mark.parametrize("frontend, message", [
    ({"type": "s3prl", "name": "wavlm_large"}, "downloads its weights when it is built"),
    ({"type": "s3prl", "name": "hubert_url", "path": "https://example.org/h.pt"}, "is a download source"),
    ({"type": "hf", "path": "../models/nowhere"}, "is not found (looked at"),
    ({"type": "hf", "path": "../models/pickled"}, "has no *.safetensors weights"),
    (None, "records no frontend"),
])
def test_a_frontend_that_cannot_travel_says_what_is_missing(tmp_path, fbank_frontend, frontend, message):
    model_path = recipe_layout(tmp_path, "genser", fbank_frontend)
    pickled = tmp_path / "egs" / "models" / "pickled"
    pickled.mkdir(parents=True)
    (pickled / "config.json").write_text("{}")
    (pickled / "pytorch_model.bin").write_text("pickle")
    model, extra = load_model(model_path)
    if frontend is None:
        del extra["feats"]
    else:
        extra["feats"]["frontend"] = frontend
    save_model(model_path, model, extra=extra)
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as err:
        export.main(["--model", str(model_path), "--out_dir", str(out), "--licence", "MIT"])
    assert str(err.value).startswith(f"error: cannot export {model_path}") and message in str(err.value)
    assert not out.exists() and not list(tmp_path.glob(".out.tmp.*"))


def test_card_names_the_rule_the_temperature_was_fitted_by():
    post = {"map": "barycentric", "floor": 0.0001, "fit": "brier", "tau": 0.1, "temperature": 1.6}
    note = export_lib.posterior_note({"kind": "genser", "posteriors": post})
    assert "temperature 1.6 (fitted on held-out training speakers by brier)" in note
    note = export_lib.posterior_note({"kind": "classifier", "posteriors": {**post, "fit": "nll"}})
    assert note == "softmax of the logits, temperature 1.6 (fitted on held-out training speakers by nll)"
