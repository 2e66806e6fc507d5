"""Decoding a trained fold (stage 4): the sampler settings, the decisions and posteriors, the
stochastic draws of docs/METHOD.md §6, and the check that a dump holds the model's features.
The CLI is genser.bin.decode; hyp.tsv is written and read by genser.scoring.
"""
import torch

from genser.calibration import draw_agreement, draw_spread
from genser.fileio import atomic_open
from genser.features import kind_differences
from genser.scoring import parse_etas, parse_steps, setting_name


def settings_of(kind, nsteps, eta):
    """(directory name, nsteps, eta) per decoding setting; the classifier has a single one."""
    if kind != "genser":
        return [("argmax", 1, 0.0)]
    return [(setting_name(n, e), n, e) for n in parse_steps(nsteps) for e in parse_etas(eta)]


@torch.no_grad()
def decode(model, loader, *, nsteps, eta, generator, device):
    preds, scores = [], []
    for feats, lengths, _ in loader:
        out = model.predict(feats.to(device), lengths.to(device), nsteps=nsteps, eta=eta, generator=generator)
        preds.append(out["pred"].cpu())
        scores.append(out["scores"].cpu())
    return torch.cat(preds).tolist(), torch.cat(scores).tolist()


@torch.no_grad()
def decode_draws(model, loader, *, draws, nsteps, eta, generator, device):
    """Per utterance: (vote, agreement, spread, max of the mean posterior) over ``draws`` samples."""
    rows = []
    for feats, lengths, _ in loader:
        feats, lengths = feats.to(device), lengths.to(device)
        samples = torch.stack([model.generate(feats, lengths, nsteps=nsteps, eta=eta, generator=generator)
                               for _ in range(draws)]).cpu()  # [K, B, Dc]
        out = model.decide_samples(samples.flatten(0, 1).to(device))
        posteriors = out["scores"].cpu().reshape(draws, -1, out["scores"].shape[-1])
        vote, agreement = draw_agreement(out["pred"].cpu().reshape(draws, -1).numpy(), len(model.labels))
        spread = draw_spread(samples.numpy())
        rows += list(zip(vote.tolist(), agreement.tolist(), spread.tolist(),
                         posteriors.mean(0).max(-1).values.tolist()))
    return rows


def write_draws(path, utts, refs, rows, labels, draws):
    with atomic_open(path) as f:
        f.write("\t".join(["utt", "ref", "vote", "agreement", "spread", "mean_max", "draws"]) + "\n")
        for utt, ref, (vote, agreement, spread, mean_max) in zip(utts, refs, rows):
            f.write(f"{utt}\t{labels[ref]}\t{labels[vote]}\t{agreement:.6f}\t{spread:.6f}\t{mean_max:.6f}\t{draws}\n")


def check_features(trained, found, model_path, feat_dir):
    """ValueError when the dump ``feat_dir`` holds other features than the model was trained on
    (say raw features for a model trained on speaker-normalised ones), which would decode silently wrong."""
    if not trained:  # checkpoints from before the feats entry: nothing to compare
        return
    diff = kind_differences(trained, found)
    if diff:
        raise ValueError(f"{feat_dir} holds other features than {model_path} was trained on: "
                         f"{'; '.join(diff)}")
