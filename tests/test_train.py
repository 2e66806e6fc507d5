"""Training entry point: DDP agreement across ranks, resuming, config merging, bad labels."""
import gc
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import yaml

from genser.bin import train
from genser.datadir import write_data_dir
from genser.features import write_feats_dir
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
    ddp = torch.nn.parallel.DistributedDataParallel(train.LossModule(model))
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
            "--dev_ratio", "0.5", "--model_conf", yaml.safe_dump(TINY), *extra]


def test_resume_continues_from_the_last_checkpoint(tmp_path):
    root = make_experiment(tmp_path)
    train.main(train_args(root, "--epochs", "2"))
    fold_dir = root / "exp" / "fold_1"
    assert (fold_dir / "train.done").exists() and (fold_dir / "model.pt").exists()
    ckpt = torch.load(fold_dir / "checkpoint.pt", weights_only=True)
    assert ckpt["state"]["epoch"] == 3
    (fold_dir / "train.done").unlink()
    train.main(train_args(root, "--epochs", "3"))
    text = (fold_dir / "train.log").read_text()
    assert "resuming from" in text and "at epoch 3" in text
    assert torch.load(fold_dir / "checkpoint.pt", weights_only=True)["state"]["epoch"] == 4
    assert [line.split()[0] for line in (fold_dir / "test.list").read_text().splitlines()][:1]


def test_config_file_and_cli_model_conf_merge(tmp_path):
    root = make_experiment(tmp_path)
    conf = tmp_path / "train.yaml"
    conf.write_text(yaml.safe_dump({"epochs": 1, "model_conf": {**TINY, "pooling": "attentive"}}))
    params = train.load_config(train.get_parser(), [
        "--config", str(conf), *train_args(root)[:-2], "--model_conf", "{encoder: {hidden: 24}}"])
    params.model_conf = train.merge_conf(train.read_yaml(conf)["model_conf"], params.model_conf)
    assert params.epochs == 1
    assert params.model_conf["pooling"] == "attentive"
    assert params.model_conf["encoder"] == {"hidden": 24, "layers": 1, "heads": 2}


def test_unknown_label_names_utterance_and_file(tmp_path):
    root = make_experiment(tmp_path)
    (root / "labels.txt").write_text("neutral\nhappy\nangry\n")
    with pytest.raises(ValueError, match=r"utterance spk\d-sad-\d.*utt2emo"):
        train.main(train_args(root, "--epochs", "1"))


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
