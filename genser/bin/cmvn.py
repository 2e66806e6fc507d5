"""Stage 1b: a copy of a feature dump normalised per speaker (Kaldi's per-speaker CMVN).

    python -m genser.bin.cmvn --feat_dir dump/whisper_base_mean --data_dir data/all \
        --out_dir dump/whisper_base_mean_spkcmvn [--norm_vars true] [--relevance 10]

Every speaker of ``data_dir``'s utt2spk is brought to zero mean (and unit variance) per layer
and dimension, with its moments shrunk towards those of the whole dump by ``--relevance``
utterances (genser/cmvn.py). Unsupervised: no label is read. It always recomputes (seconds for
a pooled dump), so the copy can never lag behind a re-extracted dump.
"""
import argparse
import logging
import sys

from genser.bin.common import setup_logging, str2bool
from genser.cmvn import normalize_dump
from genser.datadir import load_data_dir

log = logging.getLogger("genser.cmvn")


def get_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--feat_dir", required=True, help="the dump to normalise (stage 1)")
    p.add_argument("--data_dir", required=True, help="the data dir whose utt2spk gives the speakers")
    p.add_argument("--out_dir", required=True)
    p.add_argument("--norm_vars", type=str2bool, default=True, help="also scale to unit variance")
    p.add_argument("--relevance", type=float, default=10.0,
                   help="utterances' worth of the whole dump's moments in every speaker's (0: none)")
    return p


def main(argv=None):
    params = get_parser().parse_args(argv)
    setup_logging()
    try:
        utt2spk = load_data_dir(params.data_dir).spk
        sizes = normalize_dump(params.feat_dir, utt2spk, params.out_dir, "spk", params.norm_vars, params.relevance)
    except (OSError, ValueError) as exc:
        raise SystemExit(f"error: {params.feat_dir} -> {params.out_dir}: {exc}") from None
    small = sorted(s for s, n in sizes.items() if n < 10)
    if small:
        how = (f"their moments lean on the whole dump's (--relevance {params.relevance:g})" if params.relevance > 0
               else "their moments are noisy, and a speaker of one utterance is erased (--relevance 0)")
        log.warning("%d speaker(s) have under 10 utterances (%s): %s", len(small), " ".join(small[:10]), how)
    return 0


if __name__ == "__main__":
    sys.exit(main())
