"""Decode the test utterances of one trained fold (stage 4), for one or several sampler settings.

    python -m genser.bin.decode --model_dir exp/x/genser/fold_1 --feat_dir dump/fbank \
        --data_dir data/all --task emotion --nsteps "1 3 10" --eta "0.0 0.5"

Writes <model_dir>/decode_nsteps<N>_eta<E>/hyp.tsv for Gen-SER and decode_argmax/hyp.tsv for
the classifier: utt, ref, hyp and one posterior column per label. No retraining is involved, so
stage 4 can be re-run with other --nsteps values at will.

``--protocols "clip speaker-3 speaker-all"`` decodes the same model under several evaluation
protocols (genser/cmvn.py): hyp.tsv is the clip protocol (each test clip normalised alone against
the model's training moments), hyp.<protocol>.tsv the others. A model trained without
normalisation gives the same decisions under all of them.

``--subset dev`` decodes the fold's dev utterances (training speakers held out of training,
``genser-train --dev_ratio``) into hyp_dev.tsv instead: what temperature scaling is fitted on
(genser.bin.calibrate). ``--draws K`` adds, for Gen-SER settings with eta > 0, draws.tsv: the
vote, agreement and spread of K stochastic terminal samples per utterance (docs/METHOD.md §6).
"""
import argparse
import logging
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from genser.bin.common import load_config, setup_logging
from genser import trainer
from genser.checkpoint import load_model
from genser.cmvn import parse_protocols
from genser.datadir import ATTR_OF_TASK, load_data_dir
from genser.decoding import check_features, decode, decode_draws, settings_of, write_draws
from genser.features import FeatureDataset, FeatureReader, pad_collate
from genser.metrics import summarize
from genser.scoring import hyp_name, write_hyp

log = logging.getLogger("genser.decode")


def get_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", help="YAML file with any option below")
    p.add_argument("--model_dir", required=True, help="fold directory of stage 3 (model.pt, test.list)")
    p.add_argument("--feat_dir", required=True)
    p.add_argument("--data_dir", required=True)
    p.add_argument("--task", default="emotion", choices=sorted(ATTR_OF_TASK))
    p.add_argument("--nsteps", default="1", help="sampling steps, one value or a list: \"1 3 10\" (0: decide on "
                                                 "the initial sample x1, an ablation)")
    p.add_argument("--eta", default="0.0", help="sampler stochasticity, one value or a list: \"0.0 0.5\"")
    p.add_argument("--protocols", default="clip",
                   help="evaluation protocols: clip, speaker-<K>, speaker-all (genser/cmvn.py); clip first")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--subset", default="test", choices=["test", "dev"],
                   help="utterances to decode: test.list (hyp.tsv) or dev.list (hyp_dev.tsv)")
    p.add_argument("--draws", type=int, default=0,
                   help="Gen-SER, eta > 0: K stochastic draws per utterance into draws.tsv (0: none)")
    p.add_argument("--batch_size", type=int, default=64)
    p.add_argument("--device", default="cpu")
    return p


def main(argv=None):
    params = load_config(get_parser(), argv)
    setup_logging()
    model_dir = Path(params.model_dir)
    for needed in ("model.pt", f"{params.subset}.list"):
        if not (model_dir / needed).exists():
            raise SystemExit(f"error: {model_dir / needed} is missing; it is made by stage 3 (training)")
    device = torch.device(params.device)
    model, extra = load_model(model_dir / "model.pt", map_location=device)
    model.to(device).eval()
    if extra.get("task", params.task) != params.task:
        raise SystemExit(f"error: {model_dir}/model.pt was trained for task {extra['task']}, not {params.task}")
    utts = (model_dir / f"{params.subset}.list").read_text().split()
    if not utts:
        raise SystemExit(f"error: {model_dir / (params.subset + '.list')} is empty (no dev set: train with "
                         f"--dev_ratio > 0 to hold out training speakers)")
    try:
        protocols = parse_protocols(params.protocols) if params.subset == "test" else ["clip"]
    except ValueError as e:
        raise SystemExit(f"error: --protocols: {e}") from None
    data = load_data_dir(params.data_dir)
    refs = data.targets(params.task, utts, model.labels)
    reader = FeatureReader(params.feat_dir)
    try:
        check_features(extra.get("feats"), reader.meta, model_dir / "model.pt", params.feat_dir)
    except ValueError as e:
        raise SystemExit(f"error: {e}") from None
    if reader.meta.get("cmvn", {}).get("group") == "spk":
        raise SystemExit(f"error: {params.feat_dir} is normalised per speaker with every clip of the test speaker "
                         f"(an older recipe's dump): no protocol but speaker-all can be decoded from it; retrain on "
                         f"the raw dump (the model normalises inside, genser-train --feat_norm)")
    base = FeatureDataset(reader, utts, refs)
    for protocol in protocols:
        dataset = trainer.protocol_dataset(base, extra.get("norm"), data.spk.__getitem__, protocol, params.seed)
        loader = DataLoader(dataset, batch_size=params.batch_size, collate_fn=pad_collate)
        decode_protocol(params, model, extra, model_dir, loader, utts, refs, hyp_name(protocol, params.subset))


def decode_protocol(params, model, extra, model_dir, loader, utts, refs, hyp_name):
    """Every sampler setting of one protocol into decode_<setting>/<hyp_name>."""
    device = torch.device(params.device)
    for name, nsteps, eta in settings_of(model.kind, params.nsteps, params.eta):
        generator = torch.Generator(device=device).manual_seed(params.seed)
        preds, scores = decode(model, loader, nsteps=nsteps, eta=eta, generator=generator, device=device)
        write_hyp(model_dir / f"decode_{name}" / hyp_name, utts, refs, preds, scores, model.labels,
                  identity=extra.get("identity"))
        draws_path = model_dir / f"decode_{name}" / "draws.tsv"
        headline = hyp_name == "hyp.tsv"
        if params.draws > 0 and model.kind == "genser" and eta > 0 and headline:
            generator = torch.Generator(device=device).manual_seed(params.seed + 1)
            rows = decode_draws(model, loader, draws=params.draws, nsteps=nsteps, eta=eta, generator=generator,
                                device=device)
            write_draws(draws_path, utts, refs, rows, model.labels, params.draws)
        elif headline and draws_path.exists():  # it came with an older hyp.tsv
            log.info("removing %s: this decode has no draws", draws_path)
            draws_path.unlink()
        stats = summarize(refs, preds, len(model.labels))
        log.info("%s %s (%s): UA %.2f WA %.2f macro-F1 %.2f on %d utterances", model_dir, name, hyp_name,
                 100 * stats["ua"], 100 * stats["wa"], 100 * stats["macro_f1"], len(utts))


if __name__ == "__main__":
    main()
