#!/usr/bin/env python3
"""Cost benchmark: extraction, training and inference of Gen-SER against the classifier.

    python bench/cost.py --emodb ../shared/corpora/emodb --whisper ../shared/models/whisper-base \
        --out bench/results/cost.md

Every comparison is measured side by side in one run (repeats interleaved, medians quoted),
because absolute times on a shared machine drift; the ratios are the figures to read.

- Extraction: genser.bin.extract_feats (audio read, resampling, frontend, ark writing) against a
  bare forward pass of the same frontend over waveforms already in memory, as a real-time
  factor (RTF = processing seconds / audio seconds); and stage 1's wall time at nj=1 and nj=2.
- Inference on cached features: utterances/s of the classifier against Gen-SER at N=1, 3, 10.
- End to end from wav files (read, frontend, model) at N=1 and N=3 against the classifier.
- Training: seconds per epoch and peak resident memory of each model on one EmoDB fold, each
  in a fresh process.
- The ONNX head (genser-export --onnx) under ONNX Runtime against the torch head, on the CPU,
  on cached features: batches of 32 and single utterances (needs the genser[onnx] extra).

``--sections`` runs a subset (e.g. ``--sections onnx``); the feature dumps the later sections
read are then extracted once, untimed, if the work folder lacks them.
The models use the recipe configuration (egs/TEMPLATE/conf/train.yaml); their weights do not
change the cost, so the inference figures use freshly initialised models.
"""
import argparse
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import machine_description, prepare_emodb, quiet, whisper_spec, write_results  # noqa: E402

from genser.audio import AudioReader, write_wav  # noqa: E402
from genser.inference import Classifier, model_norm  # noqa: E402
from genser.options import read_yaml  # noqa: E402
from genser.datadir import load_data_dir, read_audio, split_data_dir  # noqa: E402
from genser.features import FeatureReader, model_layers, pad_collate, read_meta  # noqa: E402
from genser.frontend import build_frontend, frontend_spec  # noqa: E402
from genser.models import build_model  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
RECIPE_CONF = REPO / "egs" / "TEMPLATE" / "conf" / "train.yaml"
LABELS = ["anger", "boredom", "disgust", "fear", "happiness", "sadness", "neutral"]
SECTIONS = ("extraction", "heads", "onnx", "e2e", "training")


def get_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--emodb", required=True, help="EmoDB root (wav/*.wav)")
    p.add_argument("--whisper", help="whisper-base transformers folder; without it only fbank runs")
    p.add_argument("--work", default="bench/work_cost", help="data and feature dumps")
    p.add_argument("--repeats", type=int, default=5, help="timed repeats per measurement (median quoted)")
    p.add_argument("--batch_size", type=int, default=8, help="utterances per forward pass")
    p.add_argument("--train_epochs", type=int, default=6)
    p.add_argument("--e2e_utts", type=int, default=120, help="utterances for the end-to-end measurement")
    p.add_argument("--sections", default=" ".join(SECTIONS),
                   help=f"what to measure, a subset of: {' '.join(SECTIONS)}")
    p.add_argument("--out", default="bench/results/cost.md")
    return p


def interleaved(fns, repeats):
    """{name: median seconds}: every repeat runs each fn once, in turn, after one warm-up round,
    so slow phases of a shared machine hit every contender alike."""
    times = {name: [] for name in fns}
    for round_ in range(repeats + 1):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            if round_:
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def batches(items, size):
    return [items[i:i + size] for i in range(0, len(items), size)]


# ----------------------------------------------------------------------------------------------
def bench_extraction(args, data, frontends, work):
    """RTF of the extraction job against the bare frontend forward; nj=1 vs nj=2 wall time.

    The shared EmoDB copy is 22.05 kHz, and resampling it costs about as much as fbank itself,
    so the job is timed on a 16 kHz copy (the rate of the original corpus, and the bare forward's
    input) as well as on the 22.05 kHz copy."""
    data16 = resampled_copy(data, work)
    utts = read_audio(data16)
    reader = AudioReader()
    wavs = [reader(u, *utts[u]) for u in utts]
    audio_s = sum(w.numel() for w in wavs) / 16000
    rows, dumps = [], {}
    for name, spec in frontends.items():
        frontend = build_frontend(spec)
        (work / f"{name}.yaml").write_text(yaml.safe_dump(spec))

        def bare():
            for group in batches(wavs, args.batch_size):
                frontend(group)

        def job(data_dir, dump, walls):
            def fn():  # a fresh job each time: its done marker would otherwise skip the work
                for stale in dump.glob("feats*"):
                    stale.unlink()
                quiet("genser.bin.extract_feats", ["--data_dir", str(data_dir), "--out_dir", str(dump), "--frontend_conf",
                                           str(work / f"{name}.yaml"), "--batch_size", str(args.batch_size)],
                      work / "log" / f"extract_{name}.log")
                # the job's own clock: frontend loading excluded, as in the bare forward
                walls.append(read_yaml(dump / "feats.1.done")["meta"]["wall_seconds"])
            return fn

        walls16, walls22 = [], []
        dumps[name] = work / "dump" / name
        medians = interleaved({"bare": bare, "16k": job(data16, work / "dump16k" / name, walls16),
                               "22k": job(data, dumps[name], walls22)}, max(1, args.repeats // 2))
        quiet("genser.bin.extract_feats", ["--merge", "--out_dir", str(dumps[name]), "--nj", "1"],
              work / "log" / f"extract_{name}.log")
        bare_s, job16, job22 = medians["bare"], statistics.median(walls16[1:]), statistics.median(walls22[1:])
        nj = stage1_wall(data16, work, name)
        rows.append(f"| {name} | {bare_s / audio_s:.4f} | {job16 / audio_s:.4f} | {100 * (job16 / bare_s - 1):+.0f}% | "
                    f"{job22 / audio_s:.4f} | {100 * (job22 / bare_s - 1):+.0f}% | {nj[1]:.1f} s | {nj[2]:.1f} s | "
                    f"{nj[1] / nj[2]:.2f}x |")
    table = [f"{len(utts)} utterances, {audio_s:.0f} s of audio.", "",
             "| frontend | RTF bare forward | RTF job, 16 kHz wavs | overhead | RTF job, 22.05 kHz wavs | overhead | "
             "stage 1 nj=1 | stage 1 nj=2 | speed-up |", "|---|---|---|---|---|---|---|---|---|", *rows]
    return table, dumps


def resampled_copy(data, work):
    """A copy of the data dir whose wav.scp points at 16 kHz PCM-16 versions of its audio."""
    out = work / "data" / "all16k"
    if (out / "wav.scp").exists():
        return out
    reader, entries = AudioReader(), []
    for utt, (path, start, end) in read_audio(data).items():
        wav_path = work / "wav16k" / f"{utt}.wav"
        wav_path.parent.mkdir(parents=True, exist_ok=True)
        write_wav(wav_path, reader(utt, path, start, end), 16000)
        entries.append(f"{utt} {wav_path.resolve()}")
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(data, tmp, ignore=shutil.ignore_patterns("split*", "wav.scp", "segments"))
    (tmp / "wav.scp").write_text("\n".join(entries) + "\n")
    tmp.rename(out)
    return out


def stage1_wall(data, work, name):
    """Wall seconds of stage 1's jobs as ser.sh runs them: nj processes in parallel (the merge
    that follows reads only the scp files and is left out)."""
    out = {}
    for nj in (1, 2):
        dump = work / "dump_nj" / f"{name}_nj{nj}"
        splits = split_data_dir(data, nj)
        start = time.perf_counter()
        procs = [subprocess.Popen(
            [sys.executable, "-m", "genser.bin.extract_feats", "--data_dir", str(split), "--out_dir", str(dump),
             "--job", str(j), "--frontend_conf", str(work / f"{name}.yaml")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for j, split in enumerate(splits, 1)]
        if any(p.wait() for p in procs):
            raise RuntimeError(f"stage-1 benchmark: an extraction job of {name} nj={nj} failed")
        out[nj] = time.perf_counter() - start
        for stale in dump.glob("feats*"):
            stale.unlink()
    return out


# ----------------------------------------------------------------------------------------------
def recipe_models(meta):
    conf = read_yaml(RECIPE_CONF)["model_conf"]
    torch.manual_seed(0)
    return {kind: build_model({**conf, "model": kind}, LABELS, input_dim=meta["dim"],
                              num_layers=model_layers(meta)).eval() for kind in ("classifier", "genser")}


def bench_heads(args, dump, utts, pooled=False):
    """Utterances/s of the model alone on cached features: classifier vs Gen-SER N=1, 3, 10.
    ``pooled``: on the utterance means of the frames ([1, L, D] per utterance, what the recipe's
    --feat_pooling mean stores), where the whole model is a few small matrix products."""
    reader = FeatureReader(dump)
    models = recipe_models(read_meta(dump))
    feats = {u: reader[u].mean(axis=0, keepdims=True) if pooled else reader[u] for u in utts}
    padded = [pad_collate([(feats[u], 0) for u in group])[:2] for group in batches(utts, 32)]

    def run(model, nsteps):
        def fn():
            for x, lengths in padded:
                model.predict(x, lengths, nsteps=nsteps)
        return fn

    fns = {"classifier": run(models["classifier"], 1)}
    fns.update({f"Gen-SER N={n}": run(models["genser"], n) for n in (1, 3, 10)})
    return ratio_table(interleaved(fns, args.repeats), len(utts))


def bench_end_to_end(args, data, spec, dump, utts):
    """Utterances/s from wav files: read + resample, frontend, model (genser-infer's path)."""
    paths = read_audio(data)
    meta = read_meta(dump)
    frontend = build_frontend(spec)
    models = recipe_models(meta)
    reader = AudioReader()

    def run(model, nsteps):
        # the dump's normalisation (if any) travels as a checkpoint's would
        clf = Classifier(model, frontend, meta, norm=model_norm({"feats": meta}), nsteps=nsteps)

        def fn():
            for group in batches(utts, args.batch_size):
                clf.posteriors([reader(u, *paths[u]) for u in group])
        return fn

    fns = {"classifier": run(models["classifier"], 1), "Gen-SER N=1": run(models["genser"], 1),
           "Gen-SER N=3": run(models["genser"], 3)}
    return ratio_table(interleaved(fns, max(1, args.repeats // 2)), len(utts))


ONNX_HEADS = (("classifier", "classifier", 1), ("Gen-SER N=1", "genser", 1), ("Gen-SER N=3", "genser", 3))


def bench_onnx(args, dump, utts, work):
    """The exported ONNX head under ONNX Runtime against the torch head, side by side: utterances/s
    on cached features, in batches of 32 and one utterance at a time (genser-infer's way), one
    thread each."""
    from genser.onnx_head import OnnxHead, export_head

    reader = FeatureReader(dump)
    models = recipe_models(read_meta(dump))
    heads = {}
    for name, kind, nsteps in ONNX_HEADS:
        path = work / "onnx" / f"{kind}_{nsteps}.onnx"
        path.parent.mkdir(parents=True, exist_ok=True)
        heads[name] = (export_head(models[kind], path, nsteps=nsteps), OnnxHead(path))
    rows = []
    for size in (32, 1):
        tensors = [pad_collate([(reader[u], 0) for u in group])[:2] for group in batches(utts, size)]
        arrays = [(x.numpy(), n.numpy()) for x, n in tensors]

        def run(fn, inputs):
            return lambda: [fn(*pair) for pair in inputs]

        fns = {}
        for name, (torch_head, onnx_head) in heads.items():
            fns[(name, "torch")], fns[(name, "onnx")] = run(torch_head, tensors), run(onnx_head, arrays)
        with torch.no_grad():
            medians = interleaved(fns, args.repeats)
            diffs = {name: max(float(abs(o(*a) - t(*x).numpy()).max()) for x, a in zip(tensors, arrays))
                     for name, (t, o) in heads.items()}
        for name in heads:
            t_torch, t_onnx = medians[(name, "torch")], medians[(name, "onnx")]
            rows.append(f"| {name} | {size} | {len(utts) / t_torch:.1f} | {len(utts) / t_onnx:.1f} | "
                        f"{t_onnx / t_torch:.3f}x | {diffs[name]:.1e} |")
    return ["| head | batch | torch utterances/s | ONNX Runtime utterances/s | ONNX time vs torch | "
            "max abs difference |", "|---|---|---|---|---|---|", *rows]


def ensure_dumps(args, data, frontends, work):
    """The feature dumps of every frontend (extracted, untimed, where the work folder lacks one)."""
    dumps = {}
    for name, spec in frontends.items():
        dumps[name] = work / "dump" / name
        if not (dumps[name] / "feats.scp").is_file():
            (work / f"{name}.yaml").write_text(yaml.safe_dump(spec))
            log = work / "log" / f"extract_{name}.log"
            quiet("genser.bin.extract_feats", ["--data_dir", str(data), "--out_dir", str(dumps[name]), "--frontend_conf",
                                       str(work / f"{name}.yaml"), "--batch_size", str(args.batch_size)], log)
            quiet("genser.bin.extract_feats", ["--merge", "--out_dir", str(dumps[name]), "--nj", "1"], log)
    return dumps


def ratio_table(medians, count):
    base = medians["classifier"]
    return ["| system | utterances/s | time vs classifier |", "|---|---|---|",
            *(f"| {name} | {count / t:.1f} | {t / base:.3f}x |" for name, t in medians.items())]


# ----------------------------------------------------------------------------------------------
# Runs one training in a fresh process and reports its peak resident memory. VmHWM is read from
# inside: the rusage of a child counts the RSS of the parent it was forked from (Linux carries
# maxrss across exec), which here would be the benchmark's own gigabytes. The entry point runs
# as `python -m genser.bin.train` runs it (runpy), so that no bench code imports genser.bin.
TRAIN_CHILD = """
import runpy, sys
sys.argv[0] = "genser.bin.train"
try:
    runpy.run_module("genser.bin.train", run_name="__main__", alter_sys=True)
except SystemExit as exc:
    if exc.code:
        raise
status = open("/proc/self/status").read()
print(next(line for line in status.splitlines() if line.startswith("VmHWM")))
"""


def bench_training(args, data, dump, work):
    """s/epoch (median over epochs 2..) and peak RSS of one fold's training, one process each."""
    labels = work / "labels.txt"
    labels.write_text("\n".join(LABELS) + "\n")
    rows = []
    for kind in ("classifier", "genser"):
        exp = work / "exp_train" / kind
        for stale in exp.glob("fold_03/*"):
            stale.unlink()
        cmd = [sys.executable, "-c", TRAIN_CHILD, "--config", str(RECIPE_CONF), "--model", kind,
               "--feat_dir", str(dump), "--data_dir", str(data), "--labels", str(labels), "--fold", "03",
               "--exp_dir", str(exp), "--epochs", str(args.train_epochs), "--num_threads", "1",
               # the fold model's epochs alone: calibration models would log theirs into train.log too
               "--calibrate", "none"]
        result = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        if result.returncode:
            raise RuntimeError(f"training benchmark failed: {' '.join(cmd)} (see {exp}/fold_03/train.log)")
        peak_mb = int(result.stdout.split()[-2]) / 1024  # "VmHWM:  123456 kB"
        epochs = [float(s) for s in re.findall(r"\| ([0-9.]+)s$", (exp / "fold_03" / "train.log").read_text(), re.M)]
        rows.append((kind, statistics.median(epochs[1:] or epochs), peak_mb))
    base = rows[0]
    return ["| system | s/epoch | vs classifier | peak RSS (MB) | vs classifier |", "|---|---|---|---|---|",
            *(f"| {k} | {s:.2f} | {s / base[1]:.2f}x | {m:.1f} | {m / base[2]:.3f}x |" for k, s, m in rows)]


def main(argv=None):
    args = get_parser().parse_args(argv)
    torch.set_num_threads(1)
    work = Path(args.work)
    data = prepare_emodb(args.emodb, work)
    frontends = {"fbank": frontend_spec({"type": "s3prl", "name": "fbank"})}
    if args.whisper:
        frontends["whisper_base"] = frontend_spec(whisper_spec(args.whisper))
    utts = sorted(load_data_dir(data).spk)
    chosen = args.sections.split()
    unknown = sorted(set(chosen) - set(SECTIONS))
    if unknown or not chosen:
        raise SystemExit(f"--sections: unknown {unknown or 'empty'}; choose from {' '.join(SECTIONS)}")
    sections = [machine_description(), "", "torch threads: 1 per process (as path.sh sets).", ""]
    if "extraction" in chosen:
        extraction, dumps = bench_extraction(args, data, frontends, work)
        sections += ["## Feature extraction (all of EmoDB)", "", *extraction, "",
                     "RTF = processing seconds per second of audio. 'Job' is genser.bin.extract_feats' own clock "
                     "(audio read, resampling where needed, frontend, checks, ark writing; model loading excluded); "
                     "the bare forward runs the same frontend on the same 16 kHz waveforms held in memory. Stage 1 "
                     "runs the nj job processes in parallel (start-up and model loading included), on the 16 kHz "
                     "copy.", ""]
    else:
        dumps = ensure_dumps(args, data, frontends, work)
    for name, dump in dumps.items() if "heads" in chosen else ():
        sections += [f"## Inference on cached {name} features ({len(utts)} utterances, batches of 32)", "",
                     *bench_heads(args, dump, utts), "",
                     f"## Inference on the utterance means of the cached {name} features (batches of 32)", "",
                     *bench_heads(args, dump, utts, pooled=True), ""]
    for name, dump in dumps.items() if "onnx" in chosen else ():
        sections += [f"## ONNX Runtime head vs torch head, cached {name} features ({len(utts)} utterances)", "",
                     *bench_onnx(args, dump, utts, work), "",
                     "The same exported graphs as genser-export --onnx (Gen-SER unrolled at N steps, eta 0) on the "
                     "same features; CPU, one thread for each runtime; 'max abs difference' compares the posteriors.",
                     ""]
    for name, dump in dumps.items() if "e2e" in chosen else ():
        sections += [f"## End to end from wav, {name} frontend ({min(len(utts), args.e2e_utts)} utterances, "
                     f"batches of {args.batch_size})", "",
                     *bench_end_to_end(args, data, frontends[name], dump, utts[:args.e2e_utts]), ""]
    for name, dump in dumps.items() if "training" in chosen else ():
        sections += [f"## Training on {name} features (fold 03, {args.train_epochs} epochs, recipe config)", "",
                     *bench_training(args, data, dump, work), ""]
    write_results(Path(args.out), title="Cost: Gen-SER vs the classifier", body="\n".join(sections), argv=sys.argv)


if __name__ == "__main__":
    main()
