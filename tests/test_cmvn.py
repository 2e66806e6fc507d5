"""genser.cmvn: per-speaker CMVN of a dump, its shrinkage, and the same normalisation of new audio."""
import math

import numpy as np
import pytest

from genser.bin import cmvn as cmvn_cli
from feature_fixtures import write_feats_dir
from genser.cmvn import (Moments, SpeakerNorm, choose_feat_norm, draw_unit, fit_prior, key_rng, label_dependence,
                         normalize, normalize_dump, normalize_unit, parse_norm_k, parse_protocols, protocol_k,
                         utterance_moments)
from genser.features import FeatureReader, read_meta

SPEAKERS = {"a": 2, "b": 5, "c": 1}  # utterances per speaker, uneven on purpose


def make_dump(path, pooling, L=2, D=3, seed=0):
    """A dump of 8 utterances of 3 speakers, each speaker offset and scaled differently."""
    rng = np.random.default_rng(seed)
    feats, utt2spk = {}, {}
    for k, (spk, n) in enumerate(SPEAKERS.items()):
        for i in range(n):
            utt = f"{spk}_{i}"
            feats[utt] = (rng.normal(size=(2 + i, L, D)) * (1 + k) + 3 * k).astype(np.float32)
            utt2spk[utt] = spk
    write_feats_dir(path, feats, {"frontend": {"type": "s3prl", "name": "x"}, "pooling": pooling})
    return FeatureReader(path), utt2spk


def by_hand(reader, utt2spk, relevance):
    """The normalised dump computed directly from the definition (utterance-weighted moments)."""
    x = {u: reader[u].astype(np.float64) for u in utt2spk}
    m1 = {u: v.mean(0) for u, v in x.items()}
    m2 = {u: (v * v).mean(0) for u, v in x.items()}
    g1, g2 = np.mean([m1[u] for u in x], 0), np.mean([m2[u] for u in x], 0)
    out = {}
    for spk in SPEAKERS:
        us = [u for u in x if utt2spk[u] == spk]
        n = len(us)
        mean = (sum(m1[u] for u in us) + relevance * g1) / (n + relevance)
        var = (sum(m2[u] for u in us) + relevance * g2) / (n + relevance) - mean**2
        for u in us:
            out[u] = (x[u] - mean) / (np.sqrt(var) + 1e-5)
    return out


@pytest.mark.parametrize("pooling", ["mean", "meanstd", "none"])
@pytest.mark.parametrize("relevance", [0.0, 3.0])
def test_normalize_dump_matches_the_definition(tmp_path, pooling, relevance):
    reader, utt2spk = make_dump(tmp_path / "raw", pooling)
    sizes = normalize_dump(tmp_path / "raw", utt2spk, tmp_path / "norm", "spk", True, relevance)
    assert sizes == SPEAKERS
    got = FeatureReader(tmp_path / "norm")
    expect = by_hand(reader, utt2spk, relevance)
    for utt in utt2spk:
        assert got[utt].shape == reader[utt].shape  # a meanstd dump keeps its [1, 2L, D] layout
        np.testing.assert_allclose(got[utt], expect[utt], rtol=1e-4, atol=1e-4)
    meta = read_meta(tmp_path / "norm")
    assert meta["cmvn"]["group"] == "spk" and meta["cmvn"]["relevance"] == relevance
    assert meta["pooling"] == pooling and meta["num_utts"] == len(utt2spk)


def test_without_shrinkage_every_speaker_is_standardised(tmp_path):
    _, utt2spk = make_dump(tmp_path / "raw", "mean")
    normalize_dump(tmp_path / "raw", utt2spk, tmp_path / "norm", relevance=0.0)
    got = FeatureReader(tmp_path / "norm")
    for spk in ("a", "b"):
        x = np.concatenate([got[u] for u in utt2spk if utt2spk[u] == spk]).astype(np.float64)
        np.testing.assert_allclose(x.mean(0), 0.0, atol=1e-5)
        np.testing.assert_allclose(x.std(0), 1.0, atol=1e-3)
    # a speaker of one utterance is erased by its own moments: why the recipe shrinks (relevance 10)
    np.testing.assert_allclose(got["c_0"], 0.0, atol=1e-5)
    normalize_dump(tmp_path / "raw", utt2spk, tmp_path / "mean_only", norm_vars=False, relevance=0.0)
    x = np.concatenate([FeatureReader(tmp_path / "mean_only")[u] for u in ("b_0", "b_1", "b_2", "b_3", "b_4")])
    np.testing.assert_allclose(x.mean(0), 0.0, atol=1e-5)
    assert not np.allclose(x.std(0), 1.0, atol=1e-2)


def test_new_audio_is_normalised_as_the_dump_was(tmp_path):
    """normalize_unit on one speaker's raw features, with only the dump's stored moments, gives
    what normalize_dump wrote for that speaker."""
    reader, utt2spk = make_dump(tmp_path / "raw", "mean")
    normalize_dump(tmp_path / "raw", utt2spk, tmp_path / "norm", relevance=3.0)
    cmvn, got = read_meta(tmp_path / "norm")["cmvn"], FeatureReader(tmp_path / "norm")
    for spk in SPEAKERS:
        utts = [u for u in utt2spk if utt2spk[u] == spk]
        out, alone = normalize_unit([reader[u] for u in utts], cmvn)
        assert not alone
        for u, x in zip(utts, out):
            np.testing.assert_allclose(x, got[u], rtol=1e-4, atol=1e-4)
    # relevance 0 and one utterance: the dump's moments alone, and the caller is told
    out, alone = normalize_unit([reader["c_0"]], {**cmvn, "relevance": 0.0})
    mean, var = np.asarray(cmvn["mean"]), np.asarray(cmvn["var"])
    assert alone and np.allclose(out[0], (reader["c_0"] - mean) / (np.sqrt(var) + 1e-5), atol=1e-5)
    assert normalize_unit([], cmvn) == ([], False)


def test_moments_of_mean_and_var():
    m = Moments.of([1.0, -2.0], [4.0, 0.5])
    mean, var = m.mean_var()
    np.testing.assert_allclose(mean, [1.0, -2.0]) and np.testing.assert_allclose(var, [4.0, 0.5])
    with pytest.raises(ValueError, match="no utterances"):
        Moments().mean_var()


def test_errors_name_the_utterance(tmp_path):
    _, utt2spk = make_dump(tmp_path / "raw", "mean")
    with pytest.raises(ValueError, match="utterance ghost has no features in .*feats.scp"):
        normalize_dump(tmp_path / "raw", {**utt2spk, "ghost": "a"}, tmp_path / "norm")
    assert not (tmp_path / "norm" / "feats.scp").exists()
    with pytest.raises(ValueError, match="relevance"):
        normalize_dump(tmp_path / "raw", utt2spk, tmp_path / "norm", relevance=-1)
    with pytest.raises(ValueError, match="group"):
        normalize_dump(tmp_path / "raw", utt2spk, tmp_path / "norm", group="room")


def test_cli(tmp_path):
    _, utt2spk = make_dump(tmp_path / "raw", "mean")
    data = tmp_path / "data"
    data.mkdir()
    (data / "utt2spk").write_text("".join(f"{u} {s}\n" for u, s in sorted(utt2spk.items())))
    (data / "wav.scp").write_text("".join(f"{u} /nonexistent/{u}.wav\n" for u in sorted(utt2spk)))
    assert cmvn_cli.main(["--feat_dir", str(tmp_path / "raw"), "--data_dir", str(data),
                          "--out_dir", str(tmp_path / "norm"), "--relevance", "2"]) == 0
    assert read_meta(tmp_path / "norm")["cmvn"]["relevance"] == 2.0
    (data / "utt2spk").write_text("ghost a\n")
    (data / "wav.scp").write_text("ghost /nonexistent/ghost.wav\n")
    with pytest.raises(SystemExit, match="ghost"):
        cmvn_cli.main(["--feat_dir", str(tmp_path / "raw"), "--data_dir", str(data), "--out_dir", str(tmp_path / "n2")])


def test_label_dependence_exact():
    spk = {f"u{i}": "ab"[i % 2] for i in range(8)}
    independent = {f"u{i}": "xy"[i // 2 % 2] for i in range(8)}  # each speaker: x twice, y twice
    assert label_dependence(spk, independent) == pytest.approx(0.0, abs=1e-12)
    determined = {u: {"a": "x", "b": "y"}[s] for u, s in spk.items()}
    assert label_dependence(spk, determined) == pytest.approx(1.0)
    # a: x x x y, b: x y y y -> I = log 2 - H(1/4) nats, H(label) = log 2
    partial = dict(zip([f"u{i}" for i in (0, 2, 4, 6, 1, 3, 5, 7)], "xxxyxyyy"))
    h14 = -(0.25 * math.log(0.25) + 0.75 * math.log(0.75))
    assert label_dependence(spk, partial) == pytest.approx((math.log(2) - h14) / math.log(2))
    assert label_dependence(spk, {"u0": "x", "u1": "x"}) == 1.0  # one label: never normalise
    with pytest.raises(ValueError, match="no utterances"):
        label_dependence(spk, {})


def test_auto_choice_reads_training_folds_only():
    """Speakers A and B speak every emotion, C only anger: fold C's training utterances (A, B)
    say normalise, fold A's (B, C) say not; the test fold's labels never enter its own choice."""
    def labels(c_labels):
        out = {f"{s}{i}": "ang neu hap sad".split()[i % 4] for s in "AB" for i in range(8)}
        return {**out, **{f"C{i}": y for i, y in enumerate(c_labels)}}

    spk = {u: u[0] for u in labels(["ang"] * 8)}
    choices = {}
    for case, c_labels in (("one", ["ang"] * 8), ("mixed", "ang neu hap sad".split() * 2)):
        lab = labels(c_labels)
        choices[case] = {fold: choose_feat_norm("auto", spk, {u: y for u, y in lab.items() if spk[u] != fold})
                         for fold in "ABC"}
    assert choices["one"]["C"] == ("speaker", 0.0) and choices["one"]["A"][0] == "none"
    assert choices["mixed"]["A"][0] == "speaker"
    assert choices["one"]["C"] == choices["mixed"]["C"]  # C's own labels changed, its choice did not
    assert choose_feat_norm("none", spk, labels(["ang"] * 8))[0] == "none"
    assert choose_feat_norm("speaker", spk, labels(["ang"] * 8))[0] == "speaker"
    with pytest.raises(ValueError, match="feat_norm must be one of"):
        choose_feat_norm("room", spk, labels(["ang"] * 8))


def test_protocol_names():
    assert [protocol_k(p) for p in ("clip", "speaker-2", "speaker-10", "speaker-all")] == [1, 2, 10, None]
    for bad in ("speaker-1", "speaker-0", "speaker", "utt", "speaker-x"):
        with pytest.raises(ValueError, match="unknown evaluation protocol"):
            protocol_k(bad)
    assert parse_protocols("clip speaker-3,speaker-all") == ["clip", "speaker-3", "speaker-all"]
    for bad in ("speaker-all clip", "", "clip clip"):
        with pytest.raises(ValueError):
            parse_protocols(bad)
    assert parse_norm_k("1 3 all") == [1, 3, None]
    for bad in ("0", "", "two"):
        with pytest.raises(ValueError):
            parse_norm_k(bad)


def test_speaker_norm_units_against_the_definition(tmp_path):
    """SpeakerNorm under each protocol equals normalize() with moments computed by hand: the
    clip's own (shrunk to the training prior), K clips of its speaker, all of them."""
    reader, utt2spk = make_dump(tmp_path / "d", "none")
    utts = reader.utts
    moments = utterance_moments(reader, utts)
    train = [u for u in utts if utt2spk[u] != "c"]
    prior = fit_prior([moments[u] for u in train], relevance=3.0)
    # the prior is the training utterances' utterance-weighted moments, test speaker c excluded
    means = np.stack([reader[u].astype(np.float64).mean(0) for u in train])
    sq = np.stack([(reader[u].astype(np.float64) ** 2).mean(0) for u in train])
    np.testing.assert_allclose(prior["mean"], means.mean(0), rtol=1e-6)
    np.testing.assert_allclose(prior["var"], sq.mean(0) - means.mean(0) ** 2, rtol=1e-5, atol=1e-6)
    norm = SpeakerNorm(moments, utt2spk, prior)
    pm, pv = np.asarray(prior["mean"], np.float64), np.asarray(prior["var"], np.float64)

    def expect(unit, u):
        s1 = sum(reader[v].astype(np.float64).mean(0) for v in unit) + 3.0 * pm
        s2 = sum((reader[v].astype(np.float64) ** 2).mean(0) for v in unit) + 3.0 * (pv + pm * pm)
        mean = s1 / (len(unit) + 3.0)
        return normalize(reader[u], mean, s2 / (len(unit) + 3.0) - mean * mean)

    b = [u for u in utts if utt2spk[u] == "b"]
    np.testing.assert_allclose(norm.apply(b[0], reader[b[0]], 1), expect([b[0]], b[0]), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(norm.apply(b[0], reader[b[0]], None), expect(b, b[0]), rtol=1e-5, atol=1e-5)
    unit = draw_unit(b[0], b, 3, key_rng(0, b[0]))
    assert len(unit) == 3 and unit[0] == b[0] and len(set(unit)) == 3 and set(unit) <= set(b)
    np.testing.assert_allclose(norm.apply(b[0], reader[b[0]], 3), expect(unit, b[0]), rtol=1e-5, atol=1e-5)
    # a unit larger than the speaker is the speaker; the draw is the same in every process
    assert sorted(draw_unit(b[0], b, 50, key_rng(0, b[0]))) == sorted(b)
    assert draw_unit(b[0], b, 3, key_rng(0, b[0])) == unit
    assert draw_unit(b[0], b, 3, key_rng(0, b[0], epoch=1)) != unit or draw_unit(b[0], b, 3, key_rng(1, b[0])) != unit


def test_clip_protocol_uses_no_other_clip_of_the_speaker(tmp_path):
    """Under the clip protocol a test clip's features depend on the clip alone: changing every
    other clip of its speaker leaves them unchanged (they do change under speaker-all)."""
    from genser.features import FeatureDataset
    from genser.trainer import protocol_dataset

    reader, utt2spk = make_dump(tmp_path / "d", "mean")
    feats = {u: reader[u] for u in reader.utts}
    prior = fit_prior(utterance_moments(reader, reader.utts).values(), relevance=10.0)
    b = [u for u in reader.utts if utt2spk[u] == "b"]
    changed = {**feats, **{u: feats[u] * 5 + 2 for u in b[1:]}}
    out = {}
    for name, fs in (("same", feats), ("changed", changed)):
        base = FeatureDataset(fs, b, [0] * len(b))
        out[name] = {p: protocol_dataset(base, prior, utt2spk.__getitem__, p, 0)[0][0].numpy()
                     for p in ("clip", "speaker-all")}
    np.testing.assert_array_equal(out["same"]["clip"], out["changed"]["clip"])
    assert not np.allclose(out["same"]["speaker-all"], out["changed"]["speaker-all"])


def test_decode_refuses_features_of_another_kind():
    """A model trained on speaker-normalised features must not be decoded on raw ones (or the
    other way round), which would run and score silently wrong."""
    from genser.decoding import check_features

    raw = {"frontend": {"type": "s3prl", "name": "fbank"}, "layers": [0], "num_layers": 1, "dim": 4,
           "pooling": "mean"}
    norm = {**raw, "cmvn": {"group": "spk", "norm_vars": True, "relevance": 10.0, "mean": [[0.0] * 4]}}
    check_features(norm, {**norm, "cmvn": {**norm["cmvn"], "mean": [[1.0] * 4]}}, "m.pt", "dump/x")  # moments may differ
    check_features(None, raw, "m.pt", "dump/x")  # an old checkpoint: nothing to compare
    for trained, found, what in ((norm, raw, "cmvn"), (raw, norm, "cmvn"), (raw, {**raw, "pooling": "meanstd"}, "pooling")):
        with pytest.raises(ValueError, match=f"dump/x holds other features than m.pt was trained on: .*{what}"):
            check_features(trained, found, "m.pt", "dump/x")
