"""genser.synth and genser.bin.make_synth: the embedded synthetic corpus."""
import hashlib
import time

import numpy as np
import pytest
import soundfile as sf

from genser import synth
from genser.datadir import load_data_dir
from genser.validate import validate_data_dir


def digest(out_dir):
    h = hashlib.sha256()
    for p in sorted((out_dir / "wav").glob("*.wav")):
        h.update(p.name.encode())
        h.update(p.read_bytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    t0 = time.time()
    data_dir = synth.generate_corpus(out, num_speakers=4, utts_per_class=2, seed=3, num_folds=2)
    return out, data_dir, time.time() - t0


def test_small_run_is_fast_and_valid(corpus):
    out, data_dir, seconds = corpus
    assert seconds < 10  # 32 utterances; ~0.02 s each on one core
    assert data_dir == out / "data"
    validate_data_dir(data_dir, check_audio=True)


def test_counts_and_labels(corpus):
    _, data_dir, _ = corpus
    data = load_data_dir(data_dir)
    assert len(data) == 4 * 4 * 2
    assert data.labels("emotion") == ["neutral", "happy", "angry", "sad"]
    assert data.labels("gender") == ["f", "m"]
    for emo in synth.EMOTIONS:
        assert sum(v == emo for v in data.emo.values()) == 8
    assert sorted(set(data.spk.values())) == ["spk01", "spk02", "spk03", "spk04"]
    assert {data.spk[u]: data.gender[u] for u in data.utts} == {
        "spk01": "f", "spk02": "m", "spk03": "f", "spk04": "m"}
    assert all(u.startswith(data.spk[u] + "_" + data.emo[u]) for u in data.utts)


def test_folds_are_speaker_disjoint_and_gender_balanced(corpus):
    _, data_dir, _ = corpus
    data = load_data_dir(data_dir)
    spk_folds = {}
    for u in data.utts:
        spk_folds.setdefault(data.spk[u], set()).add(data.fold[u])
    assert all(len(f) == 1 for f in spk_folds.values())
    by_fold = {}
    for spk, (fold,) in spk_folds.items():
        by_fold.setdefault(fold, []).append(data.gender[data.spk2utt()[spk][0]])
    assert sorted(by_fold) == ["1", "2"]
    assert all(sorted(g) == ["f", "m"] for g in by_fold.values())


def test_audio_properties(corpus):
    out, data_dir, _ = corpus
    data = load_data_dir(data_dir)
    for u in data.utts:
        info = sf.info(data.wav[u])
        assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
        assert 1.5 <= info.frames / 16000 <= 3.0
        assert abs(data.dur[u] - info.frames / 16000) < 1e-3
    x, _ = sf.read(data.wav[data.utts[0]])
    assert 0.0 < np.abs(x).max() < 1.0 and np.std(x) > 1e-3


def test_same_seed_same_bytes(tmp_path, corpus):
    out, _, _ = corpus
    again = tmp_path / "again"
    synth.generate_corpus(again, data_dir=tmp_path / "data", num_speakers=4, utts_per_class=2,
                          seed=3, num_folds=2)
    assert digest(again) == digest(out)
    other = tmp_path / "other"
    synth.generate_corpus(other, num_speakers=4, utts_per_class=2, seed=4, num_folds=2)
    assert digest(other) != digest(out)


def test_emotions_differ_in_the_intended_direction():
    """Averaged over draws: angry louder and brighter than sad; sad slower/quieter than neutral."""
    spk = synth.make_speakers(2, np.random.default_rng(0))[1]

    def stats(emo):
        level, hf = [], []
        for i in range(6):
            x = synth.synthesize(spk, emo, np.random.default_rng([1, i]), duration=1.5)
            spec = np.abs(np.fft.rfft(x)) ** 2
            level.append(10 * np.log10(np.mean(x ** 2)))
            hf.append(spec[len(spec) // 4:].sum() / spec.sum())  # share above 2 kHz
        return np.mean(level), np.mean(hf)

    angry, sad, neutral = stats("angry"), stats("sad"), stats("neutral")
    assert angry[0] > neutral[0] > sad[0]
    assert angry[1] > sad[1]


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="num_folds"):
        synth.generate_corpus(tmp_path, num_speakers=2, num_folds=3)
    with pytest.raises(ValueError, match="unknown emotion"):
        synth.synthesize(synth.make_speakers(2, np.random.default_rng(0))[0], "bored",
                         np.random.default_rng(0))


def test_make_synth_cli(tmp_path):
    from genser.bin import make_synth

    rc = make_synth.main(["--out_dir", str(tmp_path / "c"), "--data_dir", str(tmp_path / "d"),
                          "--num_speakers", "2", "--utts_per_class", "1", "--num_folds", "2",
                          "--emotions", "neutral", "sad"])
    assert rc == 0
    data = load_data_dir(tmp_path / "d")
    assert len(data) == 4 and data.labels("emotion") == ["neutral", "sad"]
    assert make_synth.main(["--out_dir", str(tmp_path / "e"), "--num_speakers", "1"]) == 1


def test_emotion_classes_overlap(tmp_path):
    """A filterbank classifier lands well above chance (25 %) and well below 100 %."""
    import torch
    from torchaudio.compliance import kaldi

    from genser.audio import AudioReader
    from genser.folds import fold_split

    data = load_data_dir(synth.generate_corpus(tmp_path, num_speakers=8, utts_per_class=4, seed=0,
                                               num_folds=4))
    reader = AudioReader()
    feats = {}
    for u in data.utts:
        f = kaldi.fbank(reader(u, data.wav[u]).unsqueeze(0) * 32768, num_mel_bins=40, dither=0.0)
        feats[u] = torch.cat([f.mean(0), f.std(0)])
    correct = total = 0
    for fold in ("1", "2", "3", "4"):
        train, _, test = fold_split(data, fold, dev_ratio=0.0)
        xtr, xte = torch.stack([feats[u] for u in train]), torch.stack([feats[u] for u in test])
        mu, sd = xtr.mean(0), xtr.std(0) + 1e-5
        xtr, xte = (xtr - mu) / sd, (xte - mu) / sd
        ytr = torch.tensor(data.targets("emotion", train))
        w = torch.zeros(xtr.shape[1], 4, requires_grad=True)
        opt = torch.optim.LBFGS([w], max_iter=100)

        def closure():
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(xtr @ w, ytr) + 1e-2 * (w ** 2).sum()
            loss.backward()
            return loss

        opt.step(closure)
        pred = (xte @ w).argmax(1)
        correct += int((pred == torch.tensor(data.targets("emotion", test))).sum())
        total += len(test)
    acc = correct / total
    print(f"speaker-disjoint fbank emotion accuracy: {acc:.3f}")
    assert 0.45 < acc < 0.95, acc
