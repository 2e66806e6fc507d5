"""The benchmark scripts run end to end on the real EmoDB copy with tiny settings (skipped where
../shared is absent); the committed figures come from full runs (bench/RESULTS.md)."""
import os
import subprocess
import sys

import pytest

pytestmark = [pytest.mark.corpus, pytest.mark.slow]


def run_bench(repo_dir, script, *args):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, str(repo_dir / "bench" / script), *map(str, args)], cwd=repo_dir,
                            env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-4000:]
    return result


def test_accuracy_bench_scores_both_systems(repo_dir, emodb_dir, tmp_path):
    out = tmp_path / "accuracy.md"
    run_bench(repo_dir, "accuracy.py", "--emodb", emodb_dir, "--work", tmp_path / "work", "--seeds", "0 1",
              "--tasks", "gender", "--folds", "03 08", "--out", out)
    text = out.read_text()
    rows = [line for line in text.splitlines() if line.startswith("| fbank_no_cmvn | gender |")]
    assert [r.split("|")[3].strip() for r in rows[:2]] == ["genser", "classifier"]
    assert "nsteps10_eta0.5" in text  # the steps ablation table


def test_cost_bench_writes_every_section(repo_dir, emodb_dir, tmp_path):
    out = tmp_path / "cost.md"
    run_bench(repo_dir, "cost.py", "--emodb", emodb_dir, "--work", tmp_path / "work", "--repeats", "1",
              "--e2e_utts", "8", "--train_epochs", "1", "--out", out)
    text = out.read_text()
    for section in ("## Feature extraction", "## Inference on cached fbank", "## End to end from wav",
                    "## Training on fbank"):
        assert section in text
    assert "| Gen-SER N=10 |" in text and "| genser |" in text
