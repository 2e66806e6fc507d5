"""The openSMILE frontend (eGeMAPS, ComParE): shapes, values, stage 1 pooling rules, ser.sh names."""
import subprocess

import numpy as np
import pytest
import torch

from genser.audio import AudioReader
from genser.bin import extract_feats
from genser.features import FeatureReader
from genser.frontend import FrontendError, build_frontend

opensmile = pytest.importorskip("opensmile", reason="the opensmile extra is not installed")

EGEMAPS = {"type": "opensmile", "feature_set": "eGeMAPSv02", "feature_level": "functionals"}


def tone(freq, seconds, sr=16000):
    t = torch.arange(int(sr * seconds)) / sr
    return 0.3 * torch.sin(2 * torch.pi * freq * t)


def test_egemaps_functionals_are_one_vector_per_utterance():
    frontend = build_frontend(EGEMAPS)
    assert (frontend.num_layers, frontend.hidden_size, frontend.utterance_level) == (1, 88, True)
    # the second clip is shorter than openSMILE's window: padded, not NaN
    layers, lengths = frontend([tone(200.0, 1.0), tone(200.0, 0.03)])
    assert layers[0].shape == (2, 1, 88) and lengths.tolist() == [1, 1]
    assert torch.isfinite(layers[0]).all()
    f0 = layers[0][0, 0, frontend.feature_names.index("F0semitoneFrom27.5Hz_sma3nz_amean")]
    # a 200 Hz tone is 12 log2(200 / 27.5) = 34.35 semitones above 27.5 Hz
    assert abs(float(f0) - 12 * np.log2(200 / 27.5)) < 0.3
    # the numbers are openSMILE's own
    direct = opensmile.Smile(feature_set=opensmile.FeatureSet.eGeMAPSv02,
                             feature_level=opensmile.FeatureLevel.Functionals)
    np.testing.assert_array_equal(layers[0][0, 0].numpy(), direct.process_signal(tone(200.0, 1.0).numpy(),
                                                                                  16000).to_numpy()[0])
    assert frontend.describe()["frame_rate"] == 0.0


def test_low_level_descriptors_are_frames():
    frontend = build_frontend({"type": "opensmile", "feature_set": "eGeMAPSv02", "feature_level": "lld"})
    assert (frontend.hidden_size, frontend.frame_rate, frontend.utterance_level) == (25, 100.0, False)
    layers, lengths = frontend([tone(150.0, 1.0), tone(150.0, 0.5)])
    # a 10-ms hop: 0.5 s more audio is 50 more frames (the count is reduced by openSMILE's window)
    assert lengths[0] - lengths[1] == 50 and 90 <= lengths[0] <= 100
    assert layers[0].shape == (2, int(lengths[0]), 25)
    assert torch.all(layers[0][1, int(lengths[1]):] == 0)  # padding of the shorter clip


@pytest.mark.parametrize("spec, message", [
    ({"type": "opensmile", "feature_set": "egemaps"}, "unknown opensmile feature_set 'egemaps'"),
    ({"type": "opensmile", "feature_set": "eGeMAPSv02", "feature_level": "lld_de"}, "not available"),
    ({"type": "opensmile", "feature_set": "eGeMAPSv02", "feature_level": "frames"}, "feature_level must be"),
    ({"type": "opensmile", "feature_set": "eGeMAPSv02", "path": "/x"}, "unknown keys ['path']"),
    ({"type": "opensmile"}, "needs 'feature_set'"),
])
def test_spec_errors(spec, message):
    with pytest.raises(FrontendError) as err:
        build_frontend(spec)
    assert message in str(err.value)


def extract(tmp_path, conf, pooling, name):
    from test_extract import make_data, merge_args

    data = tmp_path / "data" if (tmp_path / "data").is_dir() else make_data(tmp_path, n=3, nj=1)
    out = tmp_path / name
    extract_feats.main(["--data_dir", str(data), "--out_dir", str(out), "--frontend_conf", str(conf),
                        "--pooling", pooling])
    extract_feats.main(merge_args(data, out, nj=1))
    return data, FeatureReader(out)


def test_stage1_stores_functionals_unchanged_and_refuses_other_poolings(tmp_path, repo_dir):
    confs = repo_dir / "egs" / "TEMPLATE" / "conf" / "frontend"
    data, reader = extract(tmp_path, confs / "egemaps.yaml", "mean", "egemaps")
    assert reader.meta["frontend"]["feature_set"] == "eGeMAPSv02" and reader.meta["dim"] == 88
    wav = AudioReader(16000)("utt1", tmp_path / "wav" / "u1.wav")
    layers, _ = build_frontend(EGEMAPS)([wav])
    np.testing.assert_array_equal(reader["utt1"], layers[0].numpy())  # [1, 1, 88], as computed
    for pooling in ("none", "meanstd"):
        with pytest.raises(ValueError, match="already gives one vector per utterance"):
            extract(tmp_path, confs / "egemaps.yaml", pooling, f"egemaps_{pooling}")
    _, lld = extract(tmp_path, confs / "egemaps_lld.yaml", "meanstd", "lld")
    assert lld["utt1"].shape == (1, 2, 25)  # mean and std of the 25 descriptors


def test_ser_sh_names_of_the_opensmile_confs(repo_dir):
    template = repo_dir / "egs" / "TEMPLATE"
    script = (f". {template / 'names.sh'}; for c in egemaps egemaps_lld compare compare_lld; do "
              f"p=$(auto_feat_pooling {template}/conf/frontend/$c.yaml x); "
              f"echo $p $(default_feat_tag {template}/conf/frontend/$c.yaml x all $p float32); done")
    out = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True).stdout.split("\n")
    assert out[:4] == ["mean egemaps_mean", "meanstd egemaps_lld_meanstd", "mean compare_mean",
                       "meanstd compare_lld_meanstd"]


@pytest.mark.corpus
def test_compare_functionals_on_emodb(emodb_dir):
    wavs = sorted((emodb_dir / "wav").glob("*.wav"))[:2]
    reader = AudioReader(16000)
    frontend = build_frontend({"type": "opensmile", "feature_set": "ComParE_2016"})
    layers, lengths = frontend([reader(p.stem, p) for p in wavs])
    assert layers[0].shape == (2, 1, 6373) and torch.isfinite(layers[0]).all()
    assert not torch.equal(layers[0][0], layers[0][1])
