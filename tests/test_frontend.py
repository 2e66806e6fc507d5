"""genser.frontend: s3prl upstreams (fbank, *_local, offline errors), transformers folders, Whisper modes."""
import pytest
import torch

from genser.audio import AudioReader
from genser.frontend import FrontendError, build_frontend, frontend_spec


def noise(seconds, seed):
    return 0.1 * torch.randn(int(16000 * seconds), generator=torch.Generator().manual_seed(seed))


def emodb_wavs(emodb_dir, n):
    reader = AudioReader(16000)
    paths = sorted((emodb_dir / "wav").glob("*.wav"))[:n]
    return [reader(p.stem, p) for p in paths]


# ---- s3prl ---------------------------------------------------------------------------------
def test_fbank_on_emodb(emodb_dir):
    frontend = build_frontend({"type": "s3prl", "name": "fbank"})
    wavs = emodb_wavs(emodb_dir, 2) + [noise(0.5, 0)]
    layers, lengths = frontend(wavs)
    sizes = (frontend.num_layers, frontend.hidden_size, frontend.frame_rate, frontend.sample_rate)
    assert sizes == (1, 240, 100.0, 16000)
    assert len(layers) == 1 and layers[0].shape == (3, 200, 240)  # EmoDB clips are 2.0 s: 100 frames/s
    assert lengths.tolist() == [200, 200, 50] and lengths.dtype == torch.long
    assert torch.isfinite(layers[0]).all()
    # describe() is recorded in feats.yaml and rebuilds the same frontend
    desc = frontend.describe()
    assert desc["name"] == "fbank" and desc["num_layers"] == 1
    again, _ = build_frontend(desc)([wavs[0]])
    assert torch.equal(again[0][0], layers[0][0])


def test_spec_errors():
    with pytest.raises(FrontendError, match="did you mean.*wavlm"):
        build_frontend({"type": "s3prl", "name": "wavlm_larg"})
    with pytest.raises(FrontendError, match="needs a checkpoint"):
        build_frontend({"type": "s3prl", "name": "wavlm_local"})
    with pytest.raises(FrontendError, match="wavlm_local"):  # s3prl would ignore the path and download
        build_frontend({"type": "s3prl", "name": "wavlm_large", "path": "/x.pt"})
    with pytest.raises(FrontendError, match="checkpoint not found: /nonexistent.pt"):
        build_frontend({"type": "s3prl", "name": "hubert_local", "path": "/nonexistent.pt"})
    with pytest.raises(FrontendError, match="unknown keys \\['layer'\\]"):
        frontend_spec({"type": "s3prl", "name": "fbank", "layer": 3})
    with pytest.raises(FrontendError, match="type must be one of"):
        frontend_spec({"type": "espnet", "name": "fbank"})
    with pytest.raises(FrontendError, match="whisper_mode"):
        frontend_spec({"type": "hf", "path": "/x", "whisper_mode": "chunked"})
    with pytest.raises(FrontendError, match="folder not found"):
        build_frontend({"type": "hf", "path": "/nonexistent/model"})
    assert frontend_spec("mfcc") == {"type": "s3prl", "name": "mfcc"}


def test_offline_named_upstream_says_so(monkeypatch):
    import requests
    from s3prl import hub

    def offline(*args, **kwargs):  # what s3prl's download raises without network
        raise requests.exceptions.ConnectionError("Failed to resolve 'huggingface.co'")

    monkeypatch.setattr(hub, "wavlm_large", offline)
    with pytest.raises(FrontendError) as err:
        build_frontend({"type": "s3prl", "name": "wavlm_large"})
    msg = str(err.value)
    assert "'wavlm_large' could not be downloaded" in msg and "ConnectionError" in msg
    assert "name: wavlm_local, path:" in msg and "type: hf, path:" in msg and "--frontend_conf" in msg


def tiny_wavlm_checkpoint(path):
    """A randomly initialised 2-layer WavLM in the checkpoint layout s3prl's wavlm_local loads."""
    from genser.compat import import_s3prl

    import_s3prl()
    from s3prl.upstream.wavlm.WavLM import WavLM, WavLMConfig

    cfg = {"encoder_layers": 2, "encoder_embed_dim": 32, "encoder_ffn_embed_dim": 64, "encoder_attention_heads": 2,
           "conv_feature_layers": "[(32,10,5)] + [(32,3,2)] * 4 + [(32,2,2)] * 2", "conv_pos": 16,
           "conv_pos_groups": 2, "relative_position_embedding": True, "num_buckets": 16, "max_distance": 64,
           "extractor_mode": "default", "normalize": False}
    torch.manual_seed(0)
    model = WavLM(WavLMConfig(cfg))
    torch.save({"cfg": cfg, "model": model.state_dict()}, path)


def test_s3prl_local_checkpoint(tmp_path):
    ckpt = tmp_path / "tiny_wavlm.pt"
    tiny_wavlm_checkpoint(ckpt)
    frontend = build_frontend({"type": "s3prl", "name": "wavlm_local", "path": str(ckpt)})
    assert (frontend.num_layers, frontend.hidden_size, frontend.frame_rate) == (3, 32, 50.0)
    layers, lengths = frontend([noise(1.0, 1), noise(0.5, 2)])
    assert [h.shape for h in layers] == [(2, 50, 32)] * 3 and lengths.tolist() == [50, 25]
    assert frontend.describe()["path"] == str(ckpt)


# ---- transformers folders ------------------------------------------------------------------
def save_tiny_hf(folder, kind):
    from transformers import Wav2Vec2Config, Wav2Vec2Model, WavLMConfig, WavLMModel

    common = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                  conv_dim=(32,) * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2)
    torch.manual_seed(0)
    if kind == "wav2vec2":  # group-norm feature encoder (like wav2vec2-base): run one by one
        model = Wav2Vec2Model(Wav2Vec2Config(feat_extract_norm="group", do_stable_layer_norm=False, **common))
    else:  # layer-norm feature encoder: batched with an attention mask
        model = WavLMModel(WavLMConfig(feat_extract_norm="layer", do_stable_layer_norm=True, num_buckets=16,
                                       max_bucket_distance=64, **common))
    model.save_pretrained(folder)
    return model


@pytest.mark.parametrize("kind", ["wav2vec2", "wavlm"])
def test_hf_folder(tmp_path, kind):
    model = save_tiny_hf(tmp_path / kind, kind).eval()
    frontend = build_frontend({"type": "hf", "path": str(tmp_path / kind)})
    assert (frontend.num_layers, frontend.hidden_size, frontend.frame_rate) == (3, 32, 50.0)
    assert frontend.describe()["model_type"] == kind and frontend.normalize  # the extractor's default
    wavs = [noise(1.0, 3), noise(0.6, 4)]
    layers, lengths = frontend(wavs)
    assert lengths.tolist() == [49, 29] and [h.shape for h in layers] == [(2, 49, 32)] * 3
    with torch.no_grad():  # the second utterance alone, normalised as the feature extractor does
        w = wavs[1]
        ref = model((w - w.mean()).div(torch.sqrt(w.var(unbiased=False) + 1e-7))[None],
                    output_hidden_states=True).hidden_states
    for h, r in zip(layers, ref):
        torch.testing.assert_close(h[1, :29], r[0], atol=1e-4, rtol=1e-4)
    with pytest.raises(FrontendError, match="whisper_mode is for Whisper"):
        build_frontend({"type": "hf", "path": str(tmp_path / kind), "whisper_mode": "sliced"})


@pytest.fixture(scope="module")
def whisper_pair(whisper_dir):
    return {mode: build_frontend({"type": "hf", "path": str(whisper_dir), "whisper_mode": mode})
            for mode in ("sliced", "padded")}


def test_whisper_sliced_and_padded(whisper_pair, emodb_dir):
    wavs = emodb_wavs(emodb_dir, 2) + [emodb_wavs(emodb_dir, 3)[2][:16000]]  # 2.0, 2.0, 1.0 s
    sliced, padded = whisper_pair["sliced"], whisper_pair["padded"]
    assert sliced.describe()["whisper_mode"] == "sliced" and padded.describe()["whisper_mode"] == "padded"
    assert (sliced.num_layers, sliced.hidden_size, sliced.frame_rate) == (7, 512, 50.0)
    out = {mode: fe(wavs) for mode, fe in whisper_pair.items()}
    for layers, lengths in out.values():
        assert lengths.tolist() == [100, 100, 50]  # 50 frames per second
        assert [h.shape for h in layers] == [(3, 100, 512)] * 7
    # the input log-mel is identical; so is layer 0 up to the last frame's conv context
    mel_p = padded.feature_extractor(wavs[0].numpy(), sampling_rate=16000, return_tensors="pt").input_features
    assert torch.equal(sliced._mel(wavs[0]), mel_p[..., :200])
    (ls, lens), (lp, _) = out["sliced"], out["padded"]
    for b, n in enumerate(lens.tolist()):
        mean_s, mean_p = ls[0][b, :n].mean(0), lp[0][b, :n].mean(0)
        assert torch.cosine_similarity(mean_s, mean_p, dim=0) > 0.999
        torch.testing.assert_close(ls[0][b, :n - 1], lp[0][b, :n - 1], atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="longer than the 30 s"):
        sliced([torch.zeros(16000 * 31)])
