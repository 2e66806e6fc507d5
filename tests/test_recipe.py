"""Smoke test of the whole staged recipe on a tiny synthetic corpus (egs/synth, stages 0-5)."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def make_recipe(root, name="synth"):
    """A recipe directory whose entries link to egs/<name>, so outputs land under ``root``."""
    src = REPO / "egs" / name
    dst = root / "egs" / name
    dst.mkdir(parents=True)
    for entry in src.iterdir():
        if entry.name not in ("data", "dump", "exp", "downloads"):
            (dst / entry.name).symlink_to(entry.resolve())
    return dst


def run_recipe(recipe, *args, timeout=900):
    env = dict(os.environ)
    bindir = Path(sys.executable).parent
    env.update(PATH=f"{bindir}:{env['PATH']}", VIRTUAL_ENV=str(bindir.parent), OMP_NUM_THREADS="1")
    return subprocess.run(["./run.sh", *args], cwd=recipe, env=env, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def trained_recipe(tmp_path_factory):
    recipe = make_recipe(tmp_path_factory.mktemp("recipe"))
    result = run_recipe(recipe, "--local_data_opts", "--num_speakers 4 --utts_per_class 4 --num_folds 2",
                        "--train_args", "--epochs 3", "--nsteps", "1 2")
    assert result.returncode == 0, result.stderr[-4000:]
    return recipe


def test_all_stages_produce_results(trained_recipe):
    exp = trained_recipe / "exp" / "emotion_fbank"
    assert (exp / "labels.txt").read_text().split() == ["neutral", "happy", "angry", "sad"]
    folds = (exp / "folds.txt").read_text().split()
    assert len(folds) == 2
    for fold in folds:
        for setting in ("genser/fold_{}/decode_nsteps1_eta0.0", "genser/fold_{}/decode_nsteps2_eta0.0",
                        "classifier/fold_{}/decode_argmax"):
            hyp = exp / setting.format(fold) / "hyp.tsv"
            lines = hyp.read_text().splitlines()
            assert lines[0].split("\t")[:3] == ["utt", "ref", "hyp"]
            assert len(lines) == 1 + 16 * 2  # 2 speakers per fold x 4 emotions x 4 utterances
    results = (exp / "RESULTS.md").read_text()
    assert "genser" in results.lower() and "classifier" in results.lower()
    assert (trained_recipe / "dump" / "fbank" / "feats.yaml").exists()


def test_stage4_rescoring_does_not_retrain(trained_recipe):
    exp = trained_recipe / "exp" / "emotion_fbank"
    models = sorted(exp.glob("*/fold_*/model.pt"))
    before = [m.stat().st_mtime_ns for m in models]
    result = run_recipe(trained_recipe, "--stage", "4", "--stop_stage", "5", "--nsteps", "1 3")
    assert result.returncode == 0, result.stderr[-4000:]
    assert [m.stat().st_mtime_ns for m in models] == before
    assert sorted(exp.glob("genser/fold_*/decode_nsteps3_eta0.0/hyp.tsv"))
    assert "nsteps3_eta0.0" in (exp / "RESULTS.md").read_text()


def test_rerunning_training_is_a_no_op(trained_recipe):
    result = run_recipe(trained_recipe, "--stage", "3", "--stop_stage", "3")
    assert result.returncode == 0, result.stderr[-4000:]
    logs = "".join(p.read_text() for p in (trained_recipe / "exp" / "emotion_fbank").glob("*/log/train.*.log"))
    assert "nothing to do" in logs


def test_missing_prerequisite_names_file_and_stage(tmp_path):
    recipe = make_recipe(tmp_path)
    result = run_recipe(recipe, "--stage", "4", timeout=120)
    assert result.returncode != 0
    assert "folds.txt is missing" in result.stderr and "stage 2" in result.stderr


def test_genser_infer_classifies_wav_files(trained_recipe):
    model = next((trained_recipe / "exp" / "emotion_fbank" / "genser").glob("fold_*/model.pt"))
    wavs = sorted((trained_recipe / "downloads" / "synth").rglob("*.wav"))[:2]
    result = subprocess.run([sys.executable, "-m", "genser.bin.infer", "--model", str(model), "--nsteps", "2",
                             *map(str, wavs)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    assert lines[0].split("\t") == ["id", "label", "neutral", "happy", "angry", "sad"]
    for line, wav in zip(lines[1:], wavs):
        fields = line.split("\t")
        assert fields[0] == str(wav) and fields[1] in ("neutral", "happy", "angry", "sad")
        assert abs(sum(map(float, fields[2:])) - 1.0) < 1e-3
    assert len(lines) == 3
