"""The EmoDB recipe end to end on the real corpus in ../shared (skipped where it is absent).

Small settings: the recipe's fbank_no_cmvn utterance statistics, 2 of the 10
leave-one-speaker-out folds, a few epochs; the full 10-fold record is egs/emodb/RESULTS.md.
"""
import numpy as np
import pytest

from test_recipe import exp_of, make_recipe, run_recipe

pytestmark = [pytest.mark.corpus, pytest.mark.slow]

EMOTIONS = ["anger", "boredom", "disgust", "fear", "happiness", "sadness", "neutral"]
FOLD_SIZES = {"03": 49, "08": 58}  # test utterances of speakers 03 and 08 (EmoDB's counts)


@pytest.fixture(scope="module")
def emodb_recipe(tmp_path_factory, emodb_dir):
    recipe = make_recipe(tmp_path_factory.mktemp("emodb"), "emodb")
    result = run_recipe(recipe, "--corpus_dir", str(emodb_dir), "--folds", "03 08", "--nj", "2",
                        "--train_nj", "2", "--train_args", "--epochs 6", "--nsteps", "1 3")
    assert result.returncode == 0, result.stderr[-4000:]
    return recipe


def read_hyp(path):
    header, *rows = path.read_text().splitlines()
    assert header.split("\t")[:3] == ["utt", "ref", "hyp"]
    return [row.split("\t") for row in rows]


def test_data_prep_counts_and_folds(emodb_recipe):
    data = emodb_recipe / "data" / "all"
    assert (data / "labels.emo").read_text().split() == EMOTIONS
    counts = (data / "counts").read_text()
    assert "535" in counts
    folds = dict(line.split() for line in (data / "utt2fold").read_text().splitlines())
    spk = dict(line.split() for line in (data / "utt2spk").read_text().splitlines())
    assert len(folds) == 535 and folds == spk  # leave-one-speaker-out: the fold is the speaker
    gender = dict(line.split() for line in (data / "utt2gender").read_text().splitlines())
    assert {gender[u] for u in gender if spk[u] == "03"} == {"m"}
    assert {gender[u] for u in gender if spk[u] == "08"} == {"f"}


def test_folds_are_decoded_and_scored(emodb_recipe):
    exp = exp_of(emodb_recipe, "emotion_*_epochs6")
    assert (exp / "folds.txt").read_text().split() == list(FOLD_SIZES)
    correct = total = 0
    for fold, size in FOLD_SIZES.items():
        for setting in ("genser/fold_{}/decode_nsteps1_eta0.0", "genser/fold_{}/decode_nsteps3_eta0.0",
                        "classifier/fold_{}/decode_argmax"):
            rows = read_hyp(exp / "seed0" / setting.format(fold) / "hyp.tsv")
            assert len(rows) == size
            assert all(r[0][:2] == fold for r in rows)  # only the held-out speaker is tested
            correct += sum(r[1] == r[2] for r in rows)
            total += len(rows)
    # Six epochs on 9 training speakers: far from converged, but well above 1/7 chance.
    assert correct / total > 0.3
    results = (exp / "RESULTS.md").read_text()
    assert "genser" in results and "classifier" in results


def test_gender_task_reuses_the_features(emodb_recipe):
    result = run_recipe(emodb_recipe, "--stage", "2", "--task", "gender", "--folds", "03",
                        "--train_args", "--epochs 2")
    assert result.returncode == 0, result.stderr[-4000:]
    exp = exp_of(emodb_recipe, "gender_*_epochs2")
    assert (exp / "labels.txt").read_text().split() == ["f", "m"]
    rows = read_hyp(exp / "seed0" / "classifier" / "fold_03" / "decode_argmax" / "hyp.tsv")
    assert len(rows) == FOLD_SIZES["03"] and {r[1] for r in rows} == {"m"}
    assert "Stage 1" not in result.stderr  # stage 1 output is reused, not recomputed


def test_exported_onnx_heads_agree_with_torch_on_emodb_features(emodb_recipe, tmp_path, capsys):
    """genser-export --onnx on the recipe's models: ONNX Runtime on the real feature dump gives
    torch's posteriors (and the recipe's decode) to 1e-4, Gen-SER at N=1 and N=3 and the
    classifier; the exported model.pt classifies wav files as the recipe decoded them."""
    pytest.importorskip("onnxruntime", reason="the onnx extra is not installed")
    from genser.bin import export, infer
    from genser.datadir import load_data_dir
    from genser.features import FeatureDataset, FeatureReader, pad_collate
    from genser.trainer import protocol_dataset
    from genser.fileio import read_kv
    from genser.checkpoint import load_model
    from genser.onnx_head import OnnxHead

    exp = exp_of(emodb_recipe, "emotion_*_epochs6")
    reader = FeatureReader(emodb_recipe / "dump" / "fbank_no_cmvn_meanstd")
    spk = load_data_dir(emodb_recipe / "data" / "all").spk
    wavs = read_kv(emodb_recipe / "data" / "all" / "wav.scp")
    for kind, graphs in (("genser", {1: "head_nsteps1.onnx", 3: "head_nsteps3.onnx"}),
                         ("classifier", {1: "head.onnx"})):
        fold_dir = exp / "seed0" / kind / "fold_03"
        out = tmp_path / kind
        export.main(["--model", str(fold_dir / "model.pt"), "--out_dir", str(out), "--licence", "research only",
                     "--onnx", "--nsteps", "1 3"])
        assert "training corpus: emodb" in (out / "README.md").read_text()
        model, extra = load_model(fold_dir / "model.pt")
        # --feat_norm auto on EmoDB's emotions: the model normalises per speaker (from its training moments)
        assert extra["norm"]["kind"] == "speaker" and extra["feat_norm"]["kind"] == "speaker"
        for nsteps, graph in graphs.items():
            setting = "decode_argmax" if kind == "classifier" else f"decode_nsteps{nsteps}_eta0.0"
            rows = read_hyp(fold_dir / setting / "hyp.tsv")
            # hyp.tsv is the clip protocol: every test clip normalised alone
            clips = protocol_dataset(FeatureDataset(reader, [r[0] for r in rows], [0] * len(rows)), extra["norm"],
                                     spk.__getitem__, "clip", 0)
            feats, lengths, _ = pad_collate([clips[i] for i in range(len(rows))])
            onnx_scores = OnnxHead(out / graph)(feats.numpy(), lengths.numpy())
            torch_scores = model.predict(feats, lengths, nsteps=nsteps)["scores"].numpy()
            assert np.abs(onnx_scores - torch_scores).max() <= 1e-4, (kind, nsteps)
            decoded = np.array([[float(s) for s in r[3:]] for r in rows])  # printed to 6 decimals
            assert np.abs(onnx_scores - decoded).max() <= 1e-4, (kind, nsteps)
            assert [model.labels[i] for i in onnx_scores.argmax(1)] == [r[2] for r in rows]
        # genser-infer on the export, each of the test speaker's wav files alone, gives the recipe's
        # N=1 decisions under the clip protocol
        capsys.readouterr()
        rows = read_hyp(fold_dir / ("decode_argmax" if kind == "classifier" else "decode_nsteps1_eta0.0")
                        / "hyp.tsv")
        infer.main(["--model", str(out / "model.pt"), *(wavs[r[0]] for r in rows)])
        table = capsys.readouterr().out.splitlines()[1:]
        assert [line.split("\t")[1] for line in table] == [r[2] for r in rows]
