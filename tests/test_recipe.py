"""Smoke test of the whole staged recipe on a tiny synthetic corpus (egs/synth, stages 0-5)."""
import os
import re
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


SMALL = ["--local_data_opts", "--num_speakers 4 --utts_per_class 4 --num_folds 2", "--train_args", "--epochs 3"]


def exp_of(recipe, pattern="emotion_*_train_epochs3"):
    """The one experiment dir of the recipe whose name matches ``pattern``."""
    found = sorted(p for p in (recipe / "exp").glob(pattern) if p.is_dir())
    assert len(found) == 1, found
    return found[0]


@pytest.fixture(scope="module")
def trained_recipe(tmp_path_factory):
    recipe = make_recipe(tmp_path_factory.mktemp("recipe"))
    result = run_recipe(recipe, *SMALL, "--seeds", "0 1", "--nsteps", "1 2")
    assert result.returncode == 0, result.stderr[-4000:]
    return recipe


def test_all_stages_produce_results(trained_recipe):
    exp = exp_of(trained_recipe)
    assert exp.name.endswith("_train_epochs3")  # config name and overridden arguments, as ESPnet
    assert (exp / "labels.txt").read_text().split() == ["neutral", "happy", "angry", "sad"]
    folds = (exp / "folds.txt").read_text().split()
    assert len(folds) == 2
    for seed in ("0", "1"):
        for fold in folds:
            for setting in ("genser/fold_{}/decode_nsteps1_eta0.0", "genser/fold_{}/decode_nsteps2_eta0.0",
                            "classifier/fold_{}/decode_argmax"):
                hyp = exp / f"seed{seed}" / setting.format(fold) / "hyp.tsv"
                lines = hyp.read_text().splitlines()
                assert lines[0].split("\t")[:3] == ["utt", "ref", "hyp"]
                assert len(lines) == 1 + 16 * 2  # 2 speakers per fold x 4 emotions x 4 utterances
        assert "genser" in (exp / f"seed{seed}" / "RESULTS.md").read_text()
        assert (exp / f"seed{seed}" / "genser" / "config.yaml").exists()
    results = (exp / "RESULTS.md").read_text()
    assert "UA seed 0" in results and "UA seed 1" in results
    assert "paired over (fold, seed)" in results and "| 4 |" in results  # 2 folds x 2 seeds
    assert next((trained_recipe / "dump").glob("*/feats.yaml"))


def test_seeds_aggregate_to_their_mean(trained_recipe):
    from genser.scoring import load_experiment, score_experiment

    exp = exp_of(trained_recipe)
    uas = []
    for seed in ("0", "1"):
        scores, primaries = score_experiment(load_experiment(exp / f"seed{seed}"))
        uas.append(scores["genser", primaries["genser"]]["mean"]["ua"])
    row = next(line for line in (exp / "RESULTS.md").read_text().splitlines() if line.startswith("| genser"))
    assert f"{100 * (uas[0] + uas[1]) / 2:.1f} ± " in row


def test_protocols_probe_and_the_collected_table(trained_recipe, tmp_path):
    """Stage 4 decodes every protocol, stage 5 sets them side by side with the LR probe, and
    genser.bin.collect_results gathers the exp dir into one table per protocol."""
    import yaml

    exp = exp_of(trained_recipe)
    fold_dir = next(exp.glob("seed0/genser/fold_*"))
    for name in ("hyp.tsv", "hyp.speaker-3.tsv", "hyp.speaker-10.tsv", "hyp.speaker-all.tsv"):
        assert (fold_dir / "decode_nsteps1_eta0.0" / name).is_file()
    assert (fold_dir / "feat_norm").read_text().split()[0] in ("speaker", "none")
    probe = yaml.safe_load((exp / "probe.yaml").read_text())
    assert list(probe["protocols"]) == ["clip", "speaker-3", "speaker-10", "speaker-all"]
    assert sorted(probe["C"]) == sorted((exp / "folds.txt").read_text().split())
    results = (exp / "RESULTS.md").read_text()
    assert "## Summary: UA by evaluation protocol" in results and "| LR probe |" in results
    assert results.index("## Protocol clip") < results.index("## Protocol speaker-all")
    out = tmp_path / "collected.md"
    result = subprocess.run([sys.executable, "-m", "genser.bin.collect_results", "--exp", f"synth={exp}",
                             "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    table = out.read_text()
    assert table.count("## Protocol ") == 4 and "synth: 2 folds, seeds 0 1" in table
    rows = {line.split("|")[1].strip(): line for line in table.split("## Protocol speaker-3")[0].splitlines()
            if line.startswith("| ")}
    assert set(rows) >= {"Gen-SER N=1", "classifier", "LR probe"}
    assert f"| {probe['protocols']['clip']['mean_ua']:.1f} |" in rows["LR probe"]


def test_stage4_rescoring_does_not_retrain(trained_recipe):
    exp = exp_of(trained_recipe)
    models = sorted(exp.glob("seed*/*/fold_*/model.pt"))
    before = [m.stat().st_mtime_ns for m in models]
    result = run_recipe(trained_recipe, *SMALL, "--seeds", "0 1", "--stage", "4", "--stop_stage", "5",
                        "--nsteps", "1 3")
    assert result.returncode == 0, result.stderr[-4000:]
    assert [m.stat().st_mtime_ns for m in models] == before
    assert sorted(exp.glob("seed0/genser/fold_*/decode_nsteps3_eta0.0/hyp.tsv"))
    assert "nsteps3_eta0.0" in (exp / "seed0" / "RESULTS.md").read_text()


def test_rerunning_training_is_a_no_op_and_the_resume_script_works(trained_recipe):
    exp = exp_of(trained_recipe)
    script = (exp / "run.sh").read_text()
    assert script.count("--stage") == 1
    result = subprocess.run(["bash", str(exp / "run.sh"), "--stop_stage", "3"], capture_output=True, text=True,
                            env=dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}"),
                            timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    assert "Successfully finished" in result.stderr
    logs = "".join(p.read_text() for p in exp.glob("seed*/*/log/train.*.log"))
    assert "nothing to do" in logs


@pytest.mark.badinput
def test_new_settings_get_a_new_exp_dir(trained_recipe):
    """Case 3: another config, --train_args or seed never lands in (and reuses) the old exp dir."""
    result = run_recipe(trained_recipe, *SMALL[:2], "--train_args", "--epochs 2", "--stage", "2", "--stop_stage", "2")
    assert result.returncode == 0, result.stderr[-4000:]
    assert (exp_of(trained_recipe, "emotion_*_train_epochs2") / "labels.txt").exists()
    assert len(list((trained_recipe / "exp").glob("emotion_*"))) == 2


@pytest.mark.badinput
def test_training_refuses_folds_stage_2_did_not_choose(trained_recipe):
    # --stage 3 --folds 99 used to train the existing folds without a word.
    res = run_recipe(trained_recipe, *SMALL, "--stage", "3", "--stop_stage", "3", "--folds", "99")
    assert res.returncode != 0
    assert "--folds '99' is not what stage 2 chose" in res.stdout + res.stderr


def test_scoring_refuses_missing_folds_and_stale_decodes(trained_recipe, tmp_path):
    exp = exp_of(trained_recipe)
    ident = next(exp.glob("seed1/genser/fold_*/decode_nsteps1_eta0.0/identity"))
    saved = ident.read_text()
    ident.write_text("identity 0123456789abcdef\n")
    result = run_recipe(trained_recipe, *SMALL, "--seeds", "0 1", "--stage", "5")
    ident.write_text(saved)
    where = str(ident.parent.relative_to(trained_recipe))  # stage 5 names it relative to the recipe
    assert result.returncode != 0 and "stale decode" in result.stderr and where in result.stderr
    hyp = ident.parent / "hyp.tsv"
    moved = tmp_path / "hyp.tsv"
    hyp.rename(moved)
    result = run_recipe(trained_recipe, *SMALL, "--seeds", "0 1", "--stage", "5")
    moved.rename(hyp)
    assert result.returncode != 0 and "is listed in" in result.stderr


@pytest.mark.badinput
def test_a_second_run_on_a_locked_exp_dir_stops_at_once(trained_recipe):
    """Case 4: concurrent runs on one exp dir; the second names the holder."""
    from genser.lock import dir_lock

    with dir_lock(exp_of(trained_recipe)):
        result = run_recipe(trained_recipe, *SMALL, "--seeds", "0 1", "--stage", "5")
    assert result.returncode != 0 and f"pid {os.getpid()}" in result.stderr


def test_stray_arguments_are_refused(tmp_path):
    result = run_recipe(make_recipe(tmp_path), "--stage", "5", "typo", timeout=120)
    assert result.returncode == 2 and "unexpected argument" in result.stderr


def test_missing_prerequisite_names_file_and_stage(tmp_path):
    recipe = make_recipe(tmp_path)
    result = run_recipe(recipe, "--stage", "4", timeout=120)
    assert result.returncode != 0
    assert "folds.txt is missing" in result.stderr and "stage 2" in result.stderr


def test_genser_infer_classifies_wav_files(trained_recipe):
    model = next(exp_of(trained_recipe).glob("seed0/genser/fold_*/model.pt"))
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


def test_the_trained_model_is_usable_as_it_is_and_a_pickled_frontend_is_not(trained_recipe, tmp_path):
    """Issue 20: the model.pt the recipe just trained classifies files from Python and through
    genser-infer with neither --frontend_path nor --trust_frontend; the same model naming a
    pickled frontend checkpoint is refused, and its pickle never runs."""
    import torch

    from genser.checkpoint import load_model, save_model
    from genser.inference import Classifier, InferenceError

    model = next(exp_of(trained_recipe).glob("seed0/genser/fold_*/model.pt"))
    wavs = [str(w) for w in sorted((trained_recipe / "downloads" / "synth").rglob("*.wav"))[:3]]
    preds = Classifier.from_pretrained(model, nsteps=2).classify_files(wavs)
    assert [p.path for p in preds] == wavs and all(p.label in ("neutral", "happy", "angry", "sad") for p in preds)
    result = subprocess.run([sys.executable, "-m", "genser.bin.infer", "--quiet", "--model", str(model), "--nsteps",
                             "2", *wavs], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert [line.split("\t")[1] for line in result.stdout.splitlines()[1:]] == [p.label for p in preds]

    class Evil:
        def __reduce__(self):
            return exec, (f"open({str(tmp_path / 'PWNED')!r}, 'w').write('pwned')",)

    torch.save({"model": Evil()}, tmp_path / "frontend.ckpt")
    net, extra = load_model(model)
    extra["feats"]["frontend"] = {"type": "s3prl", "name": "distiller_local", "path": str(tmp_path / "frontend.ckpt")}
    save_model(tmp_path / "model.pt", net, extra=extra)
    with pytest.raises(InferenceError, match="weights_only=True"):
        Classifier.from_pretrained(tmp_path / "model.pt")
    result = subprocess.run([sys.executable, "-m", "genser.bin.infer", "--model", str(tmp_path / "model.pt"), wavs[0]],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 1 and "weights_only=True" in result.stderr and result.stdout == ""
    assert not (tmp_path / "PWNED").exists()


@pytest.mark.recipe
def test_speed_perturbation_and_speaker_cmvn_inside_the_model(tmp_path):
    recipe = make_recipe(tmp_path)
    result = run_recipe(recipe, *SMALL, "--speed_perturb_factors", "0.9 1.0 1.1", "--feat_norm", "speaker",
                        "--models", "classifier", "--nj", "1", "--folds", "1", "--protocols", "clip speaker-all")
    assert result.returncode == 0, result.stderr[-4000:]
    dumps = sorted(p.name for p in (recipe / "dump").iterdir())
    raw = min(dumps, key=len)
    assert dumps == sorted([raw, raw + "_sp0.9", raw + "_sp1.1"]), dumps  # no normalised copies: the model normalises
    import yaml
    assert yaml.safe_load((recipe / "dump" / (raw + "_sp0.9") / "feats.yaml").read_text())["speed"] == 0.9
    exp = exp_of(recipe, "emotion_*_cmvnspk_train_epochs3_sp0.9-1.1")
    log = (exp / "seed0" / "classifier" / "log" / "train.1.log").read_text()
    assert "feature normalisation: speaker (--feat_norm speaker" in log
    items, utts = map(int, re.search(r"speed perturbation: (\d+) training items \((\d+) utterances x 3", log).groups())
    fold_dir = next((exp / "seed0" / "classifier").glob("fold_*"))
    assert utts == len((fold_dir / "train.list").read_text().split()) and items == 3 * utts
    assert (fold_dir / "feat_norm").read_text().split()[0] == "speaker"
    for name in ("hyp.tsv", "hyp.speaker-all.tsv"):
        assert (fold_dir / "decode_argmax" / name).is_file()
    results = (exp / "RESULTS.md").read_text()
    assert "## Protocol clip" in results and "## Protocol speaker-all" in results
    # genser-infer normalises new audio as the model says: a file whole (clip), and in windows
    wavs = [str(w) for w in sorted((recipe / "downloads" / "synth").rglob("*.wav"))[:3]]
    infer = [sys.executable, "-m", "genser.bin.infer", "--model", str(fold_dir / "model.pt")]
    for extra in ([wavs[0]], ["--segment", "window", "--window", "0.5", "--hop", "0.5", wavs[0]]):
        out = subprocess.run(infer + extra, capture_output=True, text=True, timeout=300)
        assert out.returncode == 0 and len(out.stdout.splitlines()) >= 2, out.stderr[-3000:]
    bad = run_recipe(recipe, *SMALL, "--speed_perturb_factors", "0.9 fast", "--stage", "3")
    assert bad.returncode == 2 and "must be numbers" in bad.stderr
    bad = run_recipe(recipe, *SMALL, "--feat_norm", "room", "--stage", "3")
    assert bad.returncode == 2 and "--feat_norm must be none, speaker or auto" in bad.stderr
