"""Training entry point: DDP agreement across ranks, resuming, config merging, bad labels."""
import gc
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import yaml

from feature_fixtures import write_feats_dir
from genser import trainer
from genser.bin import train
from genser.config import merge
from genser.datadir import write_data_dir
from genser.models import build_model

LABELS = ["neutral", "happy", "angry", "sad"]
TINY = {"encoder": {"hidden": 16, "layers": 1, "heads": 2}, "denoiser": {"hidden": 32, "layers": 1},
        "taxonomy": {"dim": 16}}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_step(rank, world, port, kind, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.manual_seed(0)
    model = build_model({**TINY, "model": kind}, LABELS, input_dim=8, num_layers=2)
    ddp = torch.nn.parallel.DistributedDataParallel(trainer.LossModule(model))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    gen = torch.Generator().manual_seed(100 + rank)  # different data on every rank
    feats = torch.randn(6, 5, 2, 8, generator=gen)
    lengths = torch.tensor([5, 4, 3, 5, 2, 1])
    targets = torch.randint(0, 4, (6,), generator=gen)
    loss, _ = ddp(feats, lengths, targets)
    loss.backward()
    optimizer.step()
    flat = torch.cat([p.detach().flatten() for p in model.parameters()])
    gathered = [torch.zeros_like(flat) for _ in range(world)]
    dist.all_gather(gathered, flat)
    if rank == 0:
        np.save(out, torch.stack(gathered).numpy())
    del ddp
    gc.collect()  # the reducer must go before the process group: see genser.bin.train.main
    dist.barrier()
    dist.destroy_process_group()


@pytest.mark.parametrize("kind", ["genser", "classifier"])
@pytest.mark.ddp
def test_ddp_parameters_agree_after_a_step(kind, tmp_path):
    out = tmp_path / "params.npy"
    mp.spawn(_ddp_step, args=(2, free_port(), kind, str(out)), nprocs=2, join=True)
    params = np.load(out)
    torch.manual_seed(0)
    initial = torch.cat([p.detach().flatten() for p in build_model(
        {**TINY, "model": kind}, LABELS, input_dim=8, num_layers=2).parameters()]).numpy()
    assert np.array_equal(params[0], params[1])
    assert not np.array_equal(params[0], initial)  # the step did move the parameters


def make_experiment(root, num_spk=4, per_class=4, frames=6, dim=8, layers=2):
    """A data dir with 2 folds and class-dependent random features in the dump format."""
    rng = np.random.default_rng(0)
    records, feats = [], {}
    for s in range(num_spk):
        for k, label in enumerate(LABELS):
            for i in range(per_class):
                utt = f"spk{s}-{label}-{i}"
                records.append({"utt": utt, "path": str(root / "wav" / f"{utt}.wav"), "spk": f"spk{s}",
                                "emo": label, "gender": "fm"[s % 2], "fold": str(1 + s % 2)})
                feats[utt] = (rng.normal(size=(frames, layers, dim)) + 2.0 * k).astype(np.float32)
    write_data_dir(root / "data", records, labels={"emo": LABELS, "gender": ["f", "m"]})
    write_feats_dir(root / "dump", feats, meta={"frontend": {"type": "test"}, "pooling": "none"})
    (root / "labels.txt").write_text("\n".join(LABELS) + "\n")
    return root


def train_args(root, *extra):
    return ["--feat_dir", str(root / "dump"), "--data_dir", str(root / "data"), "--labels",
            str(root / "labels.txt"), "--fold", "1", "--exp_dir", str(root / "exp"), "--batch_size", "8",
            "--dev_ratio", "0.5", "--model_conf", yaml.safe_dump(TINY), *extra]  # later flags win


def fold_dir_of(root):
    return root / "exp" / "fold_1"


def test_no_dev_split_trains_fixed_epochs_and_averages_the_last(tmp_path):
    root = make_experiment(tmp_path)
    train.main(train_args(root, "--epochs", "4", "--dev_ratio", "0", "--average", "3"))
    fold_dir = fold_dir_of(root)
    assert (fold_dir / "dev.list").read_text() == ""
    snaps = sorted((fold_dir / "snapshots").glob("epoch*.pt"))
    assert [p.name for p in snaps] == ["epoch0002.pt", "epoch0003.pt", "epoch0004.pt"]
    averaged = trainer.average_state_dicts([torch.load(p, weights_only=True) for p in snaps])
    saved = torch.load(fold_dir / "model.pt", weights_only=True)
    assert saved["extra"]["averaged_epochs"] == [2, 3, 4]
    for key, value in averaged.items():
        assert torch.equal(saved["state_dict"][key], value), key
    assert (root / "exp" / "config.yaml").exists()
    assert yaml.safe_load((root / "exp" / "config.yaml").read_text())["average"] == 3


def test_with_a_dev_set_the_best_epochs_on_dev_are_averaged():
    history = [{"epoch": e, "dev": {"ua": ua, "loss": 1.0}} for e, ua in enumerate([0.2, 0.9, 0.5, 0.8, 0.1], 1)]
    assert trainer.epochs_to_average(history, 2, use_dev=True) == [2, 4]
    assert trainer.epochs_to_average(history, 2, use_dev=False) == [4, 5]


def test_average_state_dicts_is_the_elementwise_mean():
    a = {"w": torch.tensor([1.0, 2.0]), "n": torch.tensor(3)}
    b = {"w": torch.tensor([3.0, 6.0]), "n": torch.tensor(5)}
    out = trainer.average_state_dicts([a, b])
    assert torch.equal(out["w"], torch.tensor([2.0, 4.0])) and int(out["n"]) == 5


@pytest.mark.badinput
def test_a_finished_fold_is_reused_only_with_the_same_inputs(tmp_path):
    """Case 3: a corpus changed in place never reuses the old model."""
    root = make_experiment(tmp_path)
    train.main(train_args(root, "--epochs", "1"))
    model = fold_dir_of(root) / "model.pt"
    before = model.stat().st_mtime_ns
    train.main(train_args(root, "--epochs", "1"))
    assert "nothing to do" in (fold_dir_of(root) / "train.log").read_text()
    assert model.stat().st_mtime_ns == before
    # the corpus changed in place: a label differs, so the old model must not be reused
    utt2emo = root / "data" / "utt2emo"
    lines = utt2emo.read_text().splitlines()
    utt = lines[0].split()[0]
    lines[0] = f"{utt} {'sad' if 'sad' not in lines[0] else 'happy'}"
    utt2emo.write_text("\n".join(lines) + "\n")
    with pytest.raises(SystemExit):
        train.main(train_args(root, "--epochs", "1"))
    assert "another experiment" in (fold_dir_of(root) / "train.log").read_text()
    assert model.stat().st_mtime_ns == before


@pytest.mark.badinput
def test_resuming_with_other_epochs_is_refused(tmp_path):
    """Case 2: a resume with another --epochs is refused, not trained at lr 0."""
    root = make_experiment(tmp_path)
    train.main(train_args(root, "--epochs", "2"))
    (fold_dir_of(root) / "train.done").unlink()
    with pytest.raises(SystemExit):
        train.main(train_args(root, "--epochs", "3"))
    assert "epochs: 2 -> 3" in (fold_dir_of(root) / "train.log").read_text()


@pytest.mark.badinput
def test_divergence_stops_training_and_writes_no_model(tmp_path):
    """Case 6: a diverged model is never kept."""
    root = make_experiment(tmp_path)
    with pytest.raises(SystemExit):
        train.main(train_args(root, "--epochs", "3", "--lr", "1e6", "--grad_clip", "0"))
    text = (fold_dir_of(root) / "train.log").read_text()
    assert "non-finite" in text and "epoch 1" in text and "step" in text
    assert not (fold_dir_of(root) / "model.pt").exists()


@pytest.mark.badinput
def test_a_locked_fold_is_refused_at_once(tmp_path):
    """Case 4: a second training of one fold stops at once."""
    from genser.lock import dir_lock

    root = make_experiment(tmp_path)
    with dir_lock(fold_dir_of(root)):
        with pytest.raises(SystemExit):
            train.main(train_args(root, "--epochs", "1"))
    assert f"pid {os.getpid()}" in (fold_dir_of(root) / "train.log").read_text()
    assert not (fold_dir_of(root) / "model.pt").exists()


def test_epoch_sampler_is_a_function_of_seed_and_epoch_and_shards_for_ddp():
    s = trainer.EpochSampler(10, seed=3)
    s.set_epoch(2)
    first = list(s)
    s.set_epoch(5)
    assert list(s) != first
    s.set_epoch(2)
    assert list(s) == first and sorted(first) == list(range(10))
    shards = []
    for rank in range(3):
        r = trainer.EpochSampler(10, seed=3, rank=rank, world=3)
        r.set_epoch(2)
        shards.append(list(r))
    assert all(len(x) == 4 for x in shards)
    assert set(sum(shards, [])) == set(range(10))


def test_class_balanced_sampling_draws_classes_equally():
    targets = [0] * 90 + [1] * 10
    s = trainer.EpochSampler(100, seed=0, weights=trainer.class_balance_weights(targets))
    drawn = [targets[i] for e in range(1, 21) for i in (s.set_epoch(e) or s)]
    share = sum(drawn) / len(drawn)
    assert 0.4 < share < 0.6  # 0.1 without balancing


def _checkpoint_epoch(path):
    try:
        return torch.load(path, weights_only=True)["state"]["epoch"]
    except Exception:  # not written yet, or being replaced
        return 0


@pytest.mark.badinput
@pytest.mark.slow
def test_sigkill_and_resume_equals_an_uninterrupted_run(tmp_path):
    """Case 1 of the reliability matrix: a killed and resumed training is byte-identical."""
    from genser.bin import decode

    env = dict(os.environ, OMP_NUM_THREADS="1")
    hyps = []
    for name, kill in (("straight", False), ("killed", True)):
        root = make_experiment(tmp_path / name, num_spk=4, per_class=6)
        args = train_args(root, "--epochs", "12", "--dev_ratio", "0", "--model_conf",
                          yaml.safe_dump({**TINY, "augment": {"mixup": 0.4, "chan_masks": 1}}))
        cmd = [sys.executable, "-m", "genser.bin.train", *args]
        ckpt = fold_dir_of(root) / "checkpoint.pt"
        if kill:
            proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            while proc.poll() is None and _checkpoint_epoch(ckpt) < 5:
                time.sleep(0.05)
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            assert 5 <= _checkpoint_epoch(ckpt) <= 12, "the run ended before it could be killed"
            assert not (fold_dir_of(root) / "train.done").exists()
        subprocess.run(cmd, env=env, check=True, capture_output=True)
        if kill:
            assert "resuming from" in (fold_dir_of(root) / "train.log").read_text()
        decode.main(["--model_dir", str(fold_dir_of(root)), "--feat_dir", str(root / "dump"),
                     "--data_dir", str(root / "data")])
        hyps.append((fold_dir_of(root) / "decode_nsteps1_eta0.0" / "hyp.tsv").read_bytes())
    assert hyps[0] == hyps[1]


def test_config_file_and_cli_model_conf_merge(tmp_path):
    root = make_experiment(tmp_path)
    conf = tmp_path / "train.yaml"
    conf.write_text(yaml.safe_dump({"epochs": 1, "model_conf": {**TINY, "pooling": "attentive"}}))
    params = train.load_config(train.get_parser(), [
        "--config", str(conf), *train_args(root)[:-2], "--model_conf", "{encoder: {hidden: 24}}"])
    params.model_conf = merge(train.read_yaml(conf)["model_conf"], params.model_conf)
    assert params.epochs == 1
    assert params.model_conf["pooling"] == "attentive"
    assert params.model_conf["encoder"] == {"hidden": 24, "layers": 1, "heads": 2}


def test_unknown_label_names_utterance_and_file(tmp_path):
    root = make_experiment(tmp_path)
    (root / "labels.txt").write_text("neutral\nhappy\nangry\n")
    with pytest.raises(ValueError, match=r"utterance spk\d-sad-\d.*utt2emo"):
        train.main(train_args(root, "--epochs", "1"))


@pytest.mark.ddp
def test_torchrun_two_processes(tmp_path):
    root = make_experiment(tmp_path)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "genser.bin.train", *train_args(root, "--epochs", "1")]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    log = (root / "exp" / "fold_1" / "train.log").read_text()
    assert "world size 2" in log
    assert (root / "exp" / "fold_1" / "model.pt").exists()


@pytest.mark.parametrize("conf", sorted((Path(__file__).resolve().parents[1] / "egs" / "TEMPLATE" / "conf").glob(
    "**/*.yaml")), ids=lambda p: p.name)
def test_every_shipped_training_config_resolves(conf, tmp_path):
    """Dry run of each conf/train.yaml and conf/tuning/*.yaml, as ESPnet's CI does."""
    if "frontend" in conf.parts:
        pytest.skip("a frontend spec, not a training config")
    root = make_experiment(tmp_path)
    params = train.load_config(train.get_parser(), ["--config", str(conf), *train_args(root)[:-2]])
    model_conf = merge(train.read_yaml(conf).get("model_conf") or {}, {"model": "genser"})
    build_model(model_conf, LABELS, input_dim=8, num_layers=2)
    assert params.epochs >= 1


def calibration_case(model_conf=None):
    """Keyword arguments of trainer.calibrate_inner: 6 speakers of 4 utterances, 2 classes, a tiny
    model (the classifier unless ``model_conf`` says otherwise), one epoch."""
    import numpy as np

    from genser import trainer
    from genser.models import build_model

    rng = np.random.default_rng(0)
    utts = [f"s{s}_{i}" for s in range(6) for i in range(4)]
    conf = {"model": "classifier", "encoder": {"hidden": 8}, **(model_conf or {})}
    return {"build": lambda: build_model(conf, ["a", "b"], 4, 1),
            "sources": [{u: rng.normal(size=(1, 1, 4)).astype(np.float32) for u in utts}], "train_utts": utts,
            "targets": {u: int(u[-1]) % 2 for u in utts}, "spk": {u: u.split("_")[0] for u in utts},
            "norm_kind": "none", "params": {**trainer.TRAIN_DEFAULTS, "epochs": 1, "seed": 0, "feat_norm": "none"},
            "device": "cpu"}


def test_calibration_holds_out_training_speakers_only_and_crossfit_all_of_them():
    """--calibrate inner holds out one third of the training speakers; crossfit each third in turn,
    so every training speaker is decoded once; the temperature is positive and finite."""
    import re

    from genser import trainer

    case = calibration_case()
    spk, utts = case["spk"], case["train_utts"]
    runs = {}
    for crossfit in (False, True):
        t, report = trainer.calibrate_inner(**case, where="test", crossfit=crossfit)
        held = re.search(r"\(([^()]*)\): NLL", report).group(1).split()
        runs[crossfit] = (t, held)
        assert 0 < t < float("inf")
    assert len(runs[False][1]) == 2 and set(runs[False][1]) < set(spk.values())
    assert sorted(runs[True][1]) == sorted(set(spk.values()))
    one, reason = trainer.calibrate_inner(**{**case, "build": None, "train_utts": utts[:4]}, where="test")
    assert one == 1.0 and "1 training speaker" in reason


@pytest.mark.parametrize("model_conf, rule", [({}, "nll"), ({"model": "genser", "posterior": {"fit": "brier"}}, "brier")])
def test_a_temperature_at_the_search_bound_is_named(monkeypatch, caplog, model_conf, rule):
    # Held-out posteriors no better than chance (speaker and label dependent, as on URDU) drive
    # the score's minimum to the bound; the report and the log say so and name the way out. The
    # temperature is fitted by the rule posterior.fit names (NLL by default).
    from genser import calibration, trainer

    seen = {}

    def at_bound(probs, refs, hi, objective):
        seen["hi"], seen["objective"] = hi, objective
        return hi
    monkeypatch.setattr(calibration, "fit_temperature", at_bound)
    t, report = trainer.calibrate_inner(**calibration_case(model_conf), where="fold 1")
    assert t == seen["hi"] == trainer.TEMPERATURE_BOUND
    assert seen["objective"] == rule and f"temperature 20.000 (fitted by {rule})" in report
    assert "at the search bound 20: the held-out posteriors are no better than chance" in report
    assert "--calibrate crossfit" in report and "fold 1: calibration temperature" in caplog.text


def test_calibration_crossfits_by_default_and_refuses_an_unknown_mode(capsys):
    # the rule "auto" (inner where speaker and label are independent) is gone: crossfit is the
    # default everywhere (docs/METHOD.md §6), and a mode genser does not know is an error
    from genser import trainer
    from genser.bin import train

    assert trainer.TRAIN_DEFAULTS["calibrate"] == "crossfit"
    parser = train.get_parser()
    assert parser.get_default("calibrate") == "crossfit"
    with pytest.raises(SystemExit):
        parser.parse_args(["--feat_dir", "f", "--data_dir", "d", "--labels", "l", "--exp_dir", "e",
                           "--calibrate", "auto"])
    assert "invalid choice: 'auto'" in capsys.readouterr().err


def test_calibration_groups_set_how_many_models_and_what_each_sees(capsys, monkeypatch):
    # --calibrate_groups 6 on 6 speakers: crossfit holds out each speaker alone (six calibration
    # models, each on five speakers); fewer than 2 groups is refused on the command line and in
    # the library. The default, 3, stays out of a run's identity, so runs trained before the
    # option existed keep theirs; any other value enters it.
    import argparse
    import re

    from genser import experiment, trainer
    from genser.bin import train

    case = calibration_case()
    case["params"] = {**case["params"], "calibrate_groups": 6}
    t, report = trainer.calibrate_inner(**case, where="test", crossfit=True)
    assert "in 6 group(s) of 6 (" in report
    assert sorted(re.search(r"\(([^()]*)\): NLL", report).group(1).split()) == [f"s{s}" for s in range(6)]
    t, report = trainer.calibrate_inner(**case, where="test", crossfit=False)
    assert "of 1 held-out training speaker(s) in 1 group(s) of 6" in report
    with pytest.raises(ValueError, match="at least 2 speaker groups"):
        trainer.calibration_groups(case["train_utts"], case["targets"], case["spk"], 0, 1)
    with pytest.raises(SystemExit):
        train.get_parser().parse_args(["--feat_dir", "f", "--data_dir", "d", "--labels", "l", "--exp_dir", "e",
                                       "--calibrate_groups", "1"])
    assert "need at least 2 groups" in capsys.readouterr().err

    monkeypatch.setattr(experiment, "dump_digest", lambda reader: "dump")  # no dump here
    params = argparse.Namespace(**{**trainer.TRAIN_DEFAULTS, "task": "emotion", "data_dir": "no/such/dir", "seed": 0})
    assert "calibrate_groups" not in experiment.identity_parts(params, "1", ["a"], {}, None)
    params.calibrate_groups = 5
    assert experiment.identity_parts(params, "1", ["a"], {}, None)["calibrate_groups"] == 5
