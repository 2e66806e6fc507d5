"""The benchmark scripts run end to end on the real EmoDB copy with tiny settings (skipped where
../shared is absent); the committed figures come from full runs (bench/RESULTS.md)."""
import os
import subprocess
import sys

import pytest




def run_bench(repo_dir, script, *args):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, str(repo_dir / "bench" / script), *map(str, args)], cwd=repo_dir,
                            env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-4000:]
    return result


@pytest.mark.corpus
@pytest.mark.slow
def test_accuracy_bench_scores_both_systems(repo_dir, emodb_dir, tmp_path):
    out = tmp_path / "accuracy.md"
    run_bench(repo_dir, "accuracy.py", "--emodb", emodb_dir, "--work", tmp_path / "work", "--seeds", "0 1",
              "--tasks", "gender", "--folds", "03 08", "--out", out)
    text = out.read_text()
    rows = [line for line in text.splitlines() if line.startswith("| fbank_no_cmvn | gender |")]
    assert [r.split("|")[3].strip() for r in rows[:2]] == ["genser", "classifier"]
    assert "nsteps10_eta0.5" in text  # the steps ablation table


@pytest.mark.corpus
@pytest.mark.slow
def test_cost_bench_writes_every_section(repo_dir, emodb_dir, tmp_path):
    out = tmp_path / "cost.md"
    run_bench(repo_dir, "cost.py", "--emodb", emodb_dir, "--work", tmp_path / "work", "--repeats", "1",
              "--e2e_utts", "8", "--train_epochs", "1", "--out", out)
    text = out.read_text()
    for section in ("## Feature extraction", "## Inference on cached fbank", "## ONNX Runtime head vs torch head",
                    "## End to end from wav", "## Training on fbank"):
        assert section in text
    assert "| Gen-SER N=10 |" in text and "| genser |" in text
    onnx_rows = [line.split("|") for line in text.splitlines() if line.startswith("| Gen-SER N=3 | 1 |")]
    assert onnx_rows and float(onnx_rows[0][6]) <= 1e-4  # the exported graph agrees with torch


@pytest.mark.corpus
@pytest.mark.slow
def test_cost_bench_sections_run_alone(repo_dir, emodb_dir, tmp_path):
    out = tmp_path / "cost_onnx.md"
    run_bench(repo_dir, "cost.py", "--emodb", emodb_dir, "--work", tmp_path / "work", "--repeats", "1",
              "--sections", "onnx", "--out", out)
    text = out.read_text()
    assert "## ONNX Runtime head vs torch head" in text and "## Feature extraction" not in text
    assert [line.split("|")[1].strip() for line in text.splitlines() if line.endswith("|") and "| 32 |" in line] \
        == ["classifier", "Gen-SER N=1", "Gen-SER N=3"]


def _tiny_data_dir(root):
    from genser.datadir import write_data_dir

    records = [{"utt": f"s{s}-{e}-{i}", "path": f"/x/s{s}-{e}-{i}.wav", "spk": f"s{s}", "emo": e,
                "gender": "fm"[s % 2], "fold": f"s{s}"} for s in range(7) for e in ("neutral", "sad") for i in range(2)]
    write_data_dir(root, records, labels={"emo": ["neutral", "sad"], "gender": ["f", "m"]})
    from genser.datadir import load_data_dir

    return load_data_dir(root)


def test_tuning_never_reads_the_outer_test_fold(tmp_path):
    """bench/tune.py and the probe choose on inner splits made of the other folds' speakers only."""
    from genser.folds import inner_splits

    data = _tiny_data_dir(tmp_path / "data")
    for fold in sorted(set(data.fold.values())):
        splits = inner_splits(data, fold, 3, seed=0)
        assert len(splits) == 3
        seen_val = set()
        for fit, val in splits:
            assert fit and val
            assert all(data.fold[u] != fold for u in fit + val)  # the test fold is never touched
            assert not {data.spk[u] for u in fit} & {data.spk[u] for u in val}  # speaker-disjoint
            seen_val |= set(val)
        assert seen_val == {u for u in data.utts if data.fold[u] != fold}  # every training utt validated once


@pytest.mark.parametrize("mode, groups, models", [("inner", 3, 1), ("crossfit", 3, 3), ("crossfit", 2, 2)])
def test_recipe_calibration_bench_calibrates_within_each_inner_model_fit_speakers(tmp_path, mode, groups, models):
    """bench/calibration_maps.py --recipe_calibration: the calibration models of an inner group's
    model train and decode within that model's fit speakers only (never its held-out group, never
    the outer test fold), one of --calibration_groups held out (inner) or each in turn (crossfit)."""
    import argparse

    sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1] / "bench"))
    import calibration_maps

    from genser.folds import inner_splits

    data = _tiny_data_dir(tmp_path / "data")
    targets = {u: ["neutral", "sad"].index(data.emo[u]) for u in data.utts}
    args = argparse.Namespace(inner=3, recipe_calibration=mode, calibration_groups=groups)
    jobs = calibration_maps.calibration_jobs({}, data, targets, [0], ["s0", "s1"], args)
    for fold in ("s0", "s1"):
        for g, (fit, _) in enumerate(inner_splits(data, fold, 3, 0)):
            mine = [j for j in jobs if j["key"][:2] == (0, fold) and j["key"][3] == g]
            assert len(mine) == 2 * models  # both heads
            held = set()
            for job in mine:
                assert set(job["train_utts"]) | set(job["test_utts"]) == set(fit)  # the fit speakers, all of them
                assert not {data.spk[u] for u in job["train_utts"]} & {data.spk[u] for u in job["test_utts"]}
                held |= set(job["test_utts"])
            assert held == set(fit) if mode == "crossfit" else held < set(fit)


def test_tuning_with_speed_perturbation_adds_copies_of_fit_utterances_only(monkeypatch):
    """A speed_perturb candidate trains on its fit utterances and their perturbed copies; the
    validation utterances are scored unperturbed."""
    sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1] / "bench"))
    import numpy as np
    import tune

    utts = [f"u{i}" for i in range(8)]
    rng = np.random.default_rng(0)
    feats = {u: rng.normal(size=(1, 1, 4)).astype(np.float32) for u in utts}
    slow = {u: f + 1 for u, f in feats.items()}
    seen = []
    from genser import trainer

    real = tune.FeatureDataset

    def spy(reader, items, targets):
        seen.append(list(items))
        return real(reader, items, targets)

    monkeypatch.setattr(tune, "FeatureDataset", spy)
    monkeypatch.setattr(trainer, "FeatureDataset", spy)
    job = {"feats": feats, "perturbed": [slow], "speed_perturb": True, "targets": {u: i % 2 for i, u in enumerate(utts)},
           "labels": ["a", "b"], "seed": 0, "key": ("inner",), "model": "classifier", "train": {"epochs": 1},
           "model_conf": {"encoder": {"hidden": 8}}, "train_utts": utts[:6], "test_utts": utts[6:],
           "spk": {u: u for u in utts}, "protocol": "clip"}
    tune.train_and_predict(job)
    assert seen[0] == [(0, u) for u in utts[:6]] + [(1, u) for u in utts[:6]]
    assert seen[1] == utts[6:]
