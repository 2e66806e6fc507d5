"""genser.calibration: exact values on hand-computed cases."""
import math

import numpy as np
import yaml
import pytest

from genser.calibration import (auroc, brier, draw_agreement, draw_spread, ece, ece_floor, fit_temperature, nll,
                                reliability, summarize_calibration, temperature_scale)


def test_reliability_bins_and_edges():
    conf = np.array([0.0, 0.2, 0.25, 0.5, 0.9, 1.0])
    correct = np.array([0, 1, 0, 1, 1, 0], dtype=bool)
    bins = reliability(conf, correct, n_bins=4)
    assert [b["count"] for b in bins] == [3, 1, 0, 2]  # 0.25 lies in (0, 0.25]; 0.0 in the first bin
    assert bins[0]["conf"] == pytest.approx(0.15) and bins[0]["acc"] == pytest.approx(1 / 3)
    assert bins[2]["conf"] is None and bins[2]["acc"] is None
    assert bins[3] == {"lo": 0.75, "hi": 1.0, "count": 2, "conf": pytest.approx(0.95), "acc": 0.5}


def test_ece_by_hand():
    conf = np.array([0.9, 0.9, 0.6, 0.6])
    correct = np.array([1, 0, 1, 1], dtype=bool)
    # bins of 0.1: {0.9: acc 0.5, conf 0.9}, {0.6: acc 1, conf 0.6}: 0.5 * 0.4 + 0.5 * 0.4
    assert ece(conf, correct, n_bins=10) == pytest.approx(0.4)
    assert ece(np.array([0.75, 0.75, 0.75, 0.75]), np.array([1, 1, 1, 0], dtype=bool)) == pytest.approx(0.0)
    with pytest.raises(ValueError, match="lie in"):
        ece(np.array([1.5]), np.array([True]))


def test_ece_floor_is_the_expected_ece_of_calibrated_confidences():
    import itertools

    # two clips at 0.5 in one bin: 0 or 2 right (probability 1/4 each) is 0.5 off, 1 right is exact
    assert ece_floor(np.array([0.5, 0.5])) == pytest.approx(0.25, abs=1e-15)
    # certain clips are never off; a clip alone at 0.8 is off by 0.2 (right) or 0.8 (wrong)
    assert ece_floor(np.array([1.0, 1.0, 1.0])) == 0.0
    assert ece_floor(np.array([0.8])) == pytest.approx(0.8 * 0.2 + 0.2 * 0.8, abs=1e-15)
    # against every one of the 2^8 outcomes, weighted by its probability, over three bins
    conf = np.array([0.95, 0.97, 0.99, 0.55, 0.6, 0.62, 0.2, 1.0])
    expected = 0.0
    for outcome in itertools.product([False, True], repeat=conf.size):
        correct = np.array(outcome)
        expected += np.prod(np.where(correct, conf, 1 - conf)) * ece(conf, correct, n_bins=5)
    assert ece_floor(conf, n_bins=5) == pytest.approx(expected, abs=1e-12)
    # fewer clips, a higher floor: the same confidences repeated 4 times
    assert ece_floor(np.tile(conf, 4), n_bins=5) < ece_floor(conf, n_bins=5)
    with pytest.raises(ValueError, match="empty"):
        ece_floor(np.array([]))


def test_brier_and_nll_by_hand():
    probs = np.array([[0.5, 0.5], [1.0, 0.0]])
    targets = np.array([0, 1])
    # row 1: 0.25 + 0.25; row 2: 1 + 1
    assert brier(probs, targets) == pytest.approx(1.25)
    assert nll(probs, targets) == pytest.approx((math.log(2) - math.log(1e-12)) / 2)
    assert brier(np.eye(3), np.arange(3)) == 0.0
    with pytest.raises(ValueError, match="targets"):
        brier(probs, np.array([0, 2]))


def test_temperature_scale_is_softmax_of_scaled_logits():
    logits = np.array([[2.0, 0.0, -1.0], [0.3, 0.1, 0.2]])
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    for t in (0.5, 1.0, 3.0):
        expected = np.exp(logits / t) / np.exp(logits / t).sum(1, keepdims=True)
        np.testing.assert_allclose(temperature_scale(probs, t), expected, rtol=1e-12)
    with pytest.raises(ValueError, match="positive"):
        temperature_scale(probs, 0.0)


def test_brier_fit_is_not_set_by_one_clip_given_zero():
    """Why posterior.fit offers the Brier score: clips whose true class got a floored posterior
    dominate the NLL and push T up (softening every sure, right clip); the bounded Brier score
    moves less."""
    rng = np.random.default_rng(2)
    logits = 4.0 * rng.standard_normal((2000, 4))
    targets = logits.argmax(1)
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    floored = 0.999 * np.eye(4)[(targets + 1) % 4][:20] + 0.001 / 4  # 20 sure errors, true class at the floor
    p = np.concatenate([probs, floored])
    y = np.concatenate([targets, targets[:20]])
    t_nll, t_brier = (fit_temperature(p, y, objective=o) for o in ("nll", "brier"))
    assert t_nll > 2 * fit_temperature(probs, targets, objective="nll")
    assert t_brier < t_nll


@pytest.mark.parametrize("objective", ["nll", "brier"])
def test_fit_temperature_recovers_the_generating_temperature(objective):
    """Labels drawn from softmax(z / 2): the optimal temperature of softmax(z) under either proper
    scoring rule is near 2, and the fitted T is the minimum of its own rule on a fine grid (the
    grid-then-golden search does not stop in a local dip). An unknown rule is refused by name."""
    rng = np.random.default_rng(0)
    logits = 3.0 * rng.standard_normal((4000, 4))
    true = np.exp(logits / 2.0)
    true /= true.sum(1, keepdims=True)
    targets = np.array([rng.choice(4, p=p) for p in true])
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    t = fit_temperature(probs, targets, objective=objective)
    assert abs(t - 2.0) < 0.2
    score = {"nll": nll, "brier": brier}[objective]
    grid = np.exp(np.linspace(math.log(0.5), math.log(8.0), 2001))
    best = grid[np.argmin([score(temperature_scale(probs, g), targets) for g in grid])]
    assert t == pytest.approx(best, rel=2e-3)
    with pytest.raises(ValueError, match="objective must be one of"):
        fit_temperature(probs, targets, objective="ece")
    # an overconfident model is softened: ECE falls after scaling
    conf, correct = probs.max(1), probs.argmax(1) == targets
    scaled = temperature_scale(probs, t)
    assert ece(scaled.max(1), correct) < ece(conf, correct)


def test_auroc_by_hand_with_ties():
    assert auroc([0.9, 0.8, 0.3, 0.1], [1, 1, 0, 0]) == 1.0
    assert auroc([0.1, 0.3, 0.8, 0.9], [1, 1, 0, 0]) == 0.0
    # positives {0.5, 0.7}, negatives {0.5, 0.2}: pairs (0.5,0.5)=1/2, (0.5,0.2)=1, (0.7,.)=1+1 -> 3.5/4
    assert auroc([0.5, 0.7, 0.5, 0.2], [1, 1, 0, 0]) == pytest.approx(0.875)
    assert auroc([0.5, 0.5], [1, 1]) is None


def test_summarize_calibration():
    probs = np.array([[0.8, 0.2], [0.6, 0.4], [0.3, 0.7], [0.9, 0.1]])
    targets = np.array([0, 1, 1, 0])
    out = summarize_calibration(probs, targets, n_bins=10)
    assert out["n"] == 4 and out["acc"] == 0.75
    assert out["auroc"] == pytest.approx(1.0)  # the one error (0.6) has the lowest confidence
    assert out["brier"] == pytest.approx((0.08 + 0.72 + 0.18 + 0.02) / 4)
    assert out["ece_floor"] == pytest.approx(ece_floor(probs.max(1), n_bins=10))


def test_draw_agreement_and_spread_by_hand():
    votes = np.array([[0, 1, 2], [0, 2, 1], [1, 2, 0], [0, 1, 2]])  # K=4 draws of N=3 utterances
    vote, agreement = draw_agreement(votes, 3)
    assert vote.tolist() == [0, 1, 2] and agreement.tolist() == [0.75, 0.5, 0.5]  # ties: lowest index
    samples = np.zeros((2, 2, 3))
    samples[0, 1] = [1.0, 0.0, 0.0]
    samples[1, 1] = [-1.0, 0.0, 0.0]
    assert draw_spread(samples).tolist() == [0.0, 1.0]


# ---- genser.bin.calibrate on a hand-made experiment -----------------------------------------
LABELS = ["neutral", "happy", "angry", "sad"]


def _write_hyp(path, utts, refs, probs):
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ["\t".join(["utt", "ref", "hyp", *LABELS])]
    for utt, ref, p in zip(utts, refs, probs):
        lines.append("\t".join([utt, LABELS[ref], LABELS[int(np.argmax(p))], *(f"{x:.6f}" for x in p)]))
    path.write_text("\n".join(lines) + "\n")


def _sharp(rng, refs, right=0.7, power=3.0):
    """Overconfident posteriors: mostly right, raised to a power and renormalised."""
    logits = rng.standard_normal((len(refs), 4))
    logits[np.arange(len(refs)), refs] += 2.0 * (rng.random(len(refs)) < right)
    p = np.exp(power * logits)
    return np.round(p / p.sum(1, keepdims=True), 6)


def test_calibrate_report_matches_the_library(tmp_path):
    from genser.bin import calibrate

    rng = np.random.default_rng(0)
    exp = tmp_path / "exp"
    truth = {"test": {}, "dev": {}}
    references = {(fold, subset): rng.integers(0, 4, n) for fold in "12" for subset, n in (("test", 60), ("dev", 80))}
    for system, setting in (("genser", "nsteps3_eta0.0"), ("classifier", "argmax")):
        for fold in ("1", "2"):
            for subset in ("test", "dev"):
                refs = references[(fold, subset)]
                n = len(refs)
                probs = _sharp(rng, refs)
                utts = [f"s{fold}_{subset}_{i:03d}" for i in range(n)]
                name = "hyp.tsv" if subset == "test" else "hyp_dev.tsv"
                _write_hyp(exp / system / f"fold_{fold}" / f"decode_{setting}" / name, utts, refs, probs)
                truth[subset][(system, fold)] = (utts, refs, probs)
    # Gen-SER eta 0.5 with draws: the agreement is exactly the correctness of the eta-0 decision -> AUROC 1
    for fold in ("1", "2"):
        utts, refs, probs = truth["test"][("genser", fold)]
        _write_hyp(exp / "genser" / f"fold_{fold}" / "decode_nsteps3_eta0.5" / "hyp.tsv", utts, refs, probs)
        right = probs.argmax(1) == refs
        lines = ["\t".join(["utt", "ref", "vote", "agreement", "spread", "mean_max", "draws"])]
        for utt, ref, ok, p in zip(utts, refs, right, probs):
            lines.append(f"{utt}\t{LABELS[ref]}\t{LABELS[int(p.argmax())]}\t{1.0 if ok else 0.5}\t0.1\t{p.max()}\t8")
        (exp / "genser" / f"fold_{fold}" / "decode_nsteps3_eta0.5" / "draws.tsv").write_text("\n".join(lines) + "\n")

    # each system's config says how its temperature is fitted (posterior.fit): here Gen-SER by Brier,
    # the classifier by NLL, the default
    confs = {"genser": {"model": "genser", "posterior": {"fit": "brier"}}, "classifier": {"model": "classifier"}}
    for system, conf in confs.items():
        (exp / system / "config.yaml").write_text(yaml.safe_dump({"model": system, "model_conf": conf}))
    objective = {"genser": "brier", "classifier": "nll"}
    calibrate.main(["--exp_dir", str(exp)])
    text = (exp / "CALIBRATION.md").read_text()
    assert (exp / "reliability.png").read_bytes()[:4] == b"\x89PNG"
    for system, setting in (("genser", "nsteps3_eta0.0"), ("classifier", "argmax")):
        probs = np.concatenate([truth["test"][(system, f)][2] for f in "12"])
        refs = np.concatenate([truth["test"][(system, f)][1] for f in "12"])
        before = summarize_calibration(probs, refs, 15)
        temps = [fit_temperature(truth["dev"][(system, f)][2], truth["dev"][(system, f)][1],
                                 objective=objective[system]) for f in "12"]
        assert all(t > 1.0 for t in temps)  # the posteriors are overconfident: softened
        scaled = np.concatenate([temperature_scale(truth["test"][(system, f)][2], t) for f, t in zip("12", temps)])
        after = summarize_calibration(scaled, refs, 15)
        row = next(line for line in text.splitlines() if line.startswith(f"| {system} | `{setting}`"))
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert cells[2:9] == ["120", f"{100 * before['acc']:.1f}", f"{100 * before['ece']:.1f}",
                              f"{before['brier']:.3f}", f"{before['nll']:.3f}", f"{before['auroc']:.3f}",
                              f"{np.median(temps):.2f} [{min(temps):.2f}, {max(temps):.2f}]"]
        assert cells[9:] == [f"{100 * after['ece']:.1f}", f"{100 * after['ece_floor']:.1f}", f"{after['brier']:.3f}",
                             f"{after['nll']:.3f}"]
        assert after["ece_floor"] == pytest.approx(ece_floor(scaled.max(1)))
        assert after["nll"] < before["nll"]
    agreement = next(line for line in text.splitlines() if "| agreement |" in line)
    assert "| 1.000 |" in agreement


def test_calibrate_reads_the_temperature_a_model_holds(tmp_path):
    """Posteriors decoded by a calibrated model (genser-train --calibrate inner) are already scaled:
    the report undoes the stored T for "before" and takes them as they are for "after". Without
    any temperature it says so and how to get one."""
    from genser.bin import calibrate

    rng = np.random.default_rng(1)
    exp = tmp_path / "exp"
    raw, stored = {}, {"1": 2.0, "2": 3.0}
    for fold in "12":
        refs = rng.integers(0, 4, 50)
        probs = _sharp(rng, refs)
        raw[fold] = (refs, probs)
        fold_dir = exp / "classifier" / f"fold_{fold}"
        _write_hyp(fold_dir / "decode_argmax" / "hyp.tsv", [f"s{fold}_{i:03d}" for i in range(50)], refs,
                   temperature_scale(probs, stored[fold]))
        (fold_dir / "calibration").write_text(f"temperature {stored[fold]}\nheld-out report\n")
    calibrate.main(["--exp_dir", str(exp)])
    row = next(line for line in (exp / "CALIBRATION.md").read_text().splitlines() if line.startswith("| classifier"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    refs = np.concatenate([raw[f][0] for f in "12"])
    before = summarize_calibration(np.concatenate([raw[f][1] for f in "12"]), refs, 15)
    assert cells[4] == f"{100 * before['ece']:.1f}" and cells[8] == "2.50 [2.00, 3.00]"
    for fold in "12":
        (exp / "classifier" / f"fold_{fold}" / "calibration").unlink()
    calibrate.main(["--exp_dir", str(exp)])
    text = (exp / "CALIBRATION.md").read_text()
    assert "classifier: no temperature for 2 of 2 folds" in text and "--calibrate crossfit" in text


def test_calibrate_refuses_dev_posteriors_of_another_model(tmp_path):
    from genser.bin import calibrate

    rng = np.random.default_rng(1)
    fold = tmp_path / "exp" / "classifier" / "fold_1"
    for name, n in (("hyp.tsv", 20), ("hyp_dev.tsv", 20)):
        refs = rng.integers(0, 4, n)
        _write_hyp(fold / "decode_argmax" / name, [f"{name}{i}" for i in range(n)], refs, _sharp(rng, refs))
    (fold / "train.done").write_text("identity aaaa\n")
    (fold / "decode_argmax" / "identity").write_text("identity aaaa\n")
    (fold / "decode_argmax" / "identity_dev").write_text("identity bbbb\n")
    with pytest.raises(SystemExit, match="hyp_dev.tsv was decoded from model bbbb.*stale"):
        calibrate.main(["--exp_dir", str(tmp_path / "exp")])


# ---- genser-decode --subset dev and --draws -------------------------------------------------
def test_decode_dev_subset_and_draws(tmp_path):
    """hyp_dev.tsv holds exactly the dev speakers' utterances; draws.tsv has one row per test
    utterance with agreement in [1/K, 1] and spread >= 0, and is removed by a decode without it."""
    from test_train import fold_dir_of, make_experiment, train_args

    from genser.bin import decode, train

    root = make_experiment(tmp_path)
    train.main(train_args(root, "--epochs", "2", "--model", "genser"))
    fold = fold_dir_of(root)
    common = ["--model_dir", str(fold), "--feat_dir", str(root / "dump"), "--data_dir", str(root / "data"),
              "--nsteps", "3", "--eta", "0.0 1.0"]
    decode.main([*common, "--draws", "5"])
    decode.main([*common, "--subset", "dev"])
    out = fold / "decode_nsteps3_eta1.0"
    dev_utts = [line.split("\t")[0] for line in (out / "hyp_dev.tsv").read_text().splitlines()[1:]]
    assert dev_utts == (fold / "dev.list").read_text().split() and dev_utts
    assert (out / "identity_dev").read_text() == (fold / "train.done").read_text().splitlines()[0] + "\n"
    rows = [line.split("\t") for line in (out / "draws.tsv").read_text().splitlines()]
    assert rows[0] == ["utt", "ref", "vote", "agreement", "spread", "mean_max", "draws"]
    assert [r[0] for r in rows[1:]] == (fold / "test.list").read_text().split()
    assert all(0.2 <= float(r[3]) <= 1.0 and float(r[4]) >= 0.0 and r[6] == "5" for r in rows[1:])
    assert any(float(r[4]) > 0 for r in rows[1:])  # eta 1 at 3 steps: the draws differ
    assert not (fold / "decode_nsteps3_eta0.0" / "draws.tsv").exists()  # eta 0: nothing to draw
    decode.main(common)
    assert not (out / "draws.tsv").exists()


def test_temperature_sensitivity_bench_scales_every_fold_by_one_factor(tmp_path):
    # bench/temperature_sensitivity.py: at factor f each fold's posteriors are those at T f
    # (pooled over folds, mean over seeds); ECE's floor at f = 1; a fold whose model holds no T
    # is refused, naming it
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
    import temperature_sensitivity

    rng = np.random.default_rng(1)
    exp, pooled = tmp_path / "exp", {}
    for seed in ("0", "1"):
        for fold in ("1", "2"):
            refs = rng.integers(0, 4, 50)
            probs = _sharp(rng, refs)
            fold_dir = exp / f"seed{seed}" / "classifier" / f"fold_{fold}"
            _write_hyp(fold_dir / "decode_argmax" / "hyp.tsv", [f"u{seed}{fold}{i}" for i in range(50)], refs, probs)
            (fold_dir / "calibration").write_text("temperature 1.300000\nfitted\n")
            pooled.setdefault(seed, []).append((refs, probs))
    out = tmp_path / "out.md"
    temperature_sensitivity.main(["--exp_dir", str(exp), "--factors", "0.5 1", "--out", str(out)])
    row = next(line for line in out.read_text().splitlines() if line.startswith("| classifier | ECE % |"))
    cells = [c.strip() for c in row.strip("|").split("|")][2:]
    for cell, f in zip(cells, (0.5, 1.0)):
        per_seed = []
        for seed in ("0", "1"):
            refs = np.concatenate([r for r, _ in pooled[seed]])
            p = temperature_scale(np.concatenate([q for _, q in pooled[seed]]), f)
            per_seed.append(100 * ece(p.max(1), p.argmax(1) == refs))
        assert cell == f"{np.mean(per_seed):.1f} ({' / '.join(f'{e:.1f}' for e in per_seed)})"
    floors = [100 * ece_floor(np.concatenate([q for _, q in pooled[s]]).max(1)) for s in ("0", "1")]
    assert cells[2].startswith(f"{np.mean(floors):.1f} (")
    (exp / "seed1" / "classifier" / "fold_2" / "calibration").unlink()
    with pytest.raises(SystemExit, match="fold_2: its model holds no temperature"):
        temperature_sensitivity.main(["--exp_dir", str(exp), "--out", str(out)])
