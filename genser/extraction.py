"""Feature extraction (stage 1), the library behind genser.bin.extract_feats: one job extracts the
utterances of its split into an ark/scp pair (the done marker records the job's settings and the
audio it read, so a re-run redoes only changed or unfinished jobs), and the merge joins the jobs'
outputs into feats.scp and feats.yaml, checked against the data dir. ``args`` is the CLI's
parsed options (genser.bin.extract_feats describes each).
"""
import hashlib
import logging
import os
import sys
import time
from collections import Counter
from pathlib import Path

import yaml

from genser.audio import AudioReader, speed_perturb
from genser.datadir import read_audio
from genser.features import (ArkWriter, check_finite, stack_layers, to_matrix,
                             write_meta)
from genser.fileio import atomic_open, atomic_write, read_kv

log = logging.getLogger("genser.extract_feats")


class FrontendConfError(ValueError):
    """A --frontend_conf that cannot be resolved (an unset environment variable in its path)."""


def frontend_spec_of(args):
    """The frontend spec from --frontend_conf (a spec, or {frontend: spec}) or --frontend/--frontend_path."""
    from genser.frontend import frontend_spec
    from genser.options import read_yaml

    if args.frontend_conf:
        spec = read_yaml(args.frontend_conf)
        spec = spec.get("frontend", spec)
        if isinstance(spec.get("path"), str) and not args.frontend_path:  # site paths: egs/*/db.sh
            path = os.path.expandvars(spec["path"])
            if "$" in path:
                raise FrontendConfError(f"{args.frontend_conf}: path {spec['path']!r} names an unset "
                                 "environment variable (source db.sh, or pass --frontend_path)")
            spec = {**spec, "path": path}
    else:
        spec = {"type": "s3prl", "name": args.frontend}
    if args.frontend_path:
        spec = {**spec, "path": args.frontend_path}
    return frontend_spec(spec)


def parse_layers(layers, num_layers):
    """'all' or indices ("0 3 5", "0,3,-1") -> sorted list of valid layer indices."""
    text = str(layers).replace(",", " ").split() if not isinstance(layers, (list, tuple)) else layers
    if len(text) == 1 and str(text[0]).lower() == "all":
        return list(range(num_layers))
    try:
        keep = [int(x) for x in text]
    except ValueError:
        raise ValueError(f'--layers must be "all" or layer indices like "0 3 5", got {layers!r}') from None
    keep = [k + num_layers if k < 0 else k for k in keep]
    bad = [k for k in keep if not 0 <= k < num_layers]
    if not keep or bad or len(set(keep)) != len(keep):
        raise ValueError(f"--layers {layers!r}: need distinct indices in 0..{num_layers - 1} "
                         f"(this frontend has {num_layers} layers)")
    return sorted(keep)


def fingerprint(utts):
    """A short hash of the job's utterances and audio paths (a changed split redoes the job)."""
    text = "".join(f"{u} {p} {s} {e}\n" for u, (p, s, e) in sorted(utts.items()))
    return hashlib.sha1(text.encode("utf-8")).hexdigest()[:16]


def audio_stamps(utts):
    """{utt: "size mtime_ns ctime_ns"} of each utterance's audio file (pipes have none): cheap to
    take, and a file copied over a listed one changes it, so that the job is redone rather than
    skipped. The ctime catches what size and mtime miss: `cp -p` of a clip of the same length
    keeps both (a corpus unpacked from one archive shares its mtimes), but writing the file sets
    its ctime, which no tool can set back. A chmod sets it too: a needless re-extraction, named."""
    by_path, out = {}, {}
    for utt, (path, _, _) in sorted(utts.items()):
        if str(path).rstrip().endswith("|"):
            continue
        if path not in by_path:
            try:
                st = os.stat(path)
                by_path[path] = f"{st.st_size} {st.st_mtime_ns} {st.st_ctime_ns}"
            except OSError:
                by_path[path] = "missing"  # the reader names the missing file
        out[utt] = by_path[path]
    return out


def size_and_mtime(stamps):
    """The stamps without the ctime: what the settings' audio hash covers, as it did before the
    ctime was taken, so that dumps made then are not all re-extracted."""
    return {u: " ".join(s.split()[:2]) for u, s in stamps.items()}


def changed_audio(previous, stamps, utts):
    """Lines naming the utterances whose audio file changed since ``previous`` stamps (only the
    fields ``previous`` has: stamps written before the ctime was taken hold size and mtime)."""
    changed = [u for u in sorted(stamps)
               if u in previous and previous[u].split() != stamps[u].split()[:len(previous[u].split())]]
    return [f"utt {u}: {utts[u][0]} (size, mtime, ctime {previous[u]} -> {stamps[u]})" for u in changed]


def check_pooling(frontend, pooling):
    """Utterance-level frontends (openSMILE functionals) are stored as they are, with pooling mean:
    frames ('none') would be a 1-frame sequence, and 'meanstd' would add a std that is always 0."""
    if frontend.utterance_level and pooling != "mean":
        raise ValueError(f"--pooling {pooling}: the frontend {frontend.spec} already gives one vector per "
                         f"utterance (functionals); use --pooling mean, which stores it unchanged "
                         f"(ser.sh --feat_pooling auto picks it)")


def job_paths(out_dir, job):
    out = Path(out_dir)
    return out / f"feats.{job}.ark", out / f"feats.{job}.scp", out / f"feats.{job}.done"


# ---------------------------------------------------------------------------------------------
def run_job(args):
    utts = read_audio(args.data_dir)
    if not utts:
        raise ValueError(f"{args.data_dir}: no utterances")
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ark, scp, done = job_paths(out_dir, args.job)
    stamps = audio_stamps(utts)
    settings = {"frontend": frontend_spec_of(args), "layers": str(args.layers), "pooling": args.pooling,
                "dtype": args.dtype, "data": fingerprint(utts),
                "audio": hashlib.sha1(repr(sorted(size_and_mtime(stamps).items())).encode()).hexdigest()[:16]}
    if args.speed != 1.0:  # only then: dumps made before the option keep their settings
        settings["speed"] = args.speed
    if done.is_file() and scp.is_file() and ark.is_file():
        record = yaml.safe_load(done.read_text(encoding="utf-8")) or {}
        previous = record.get("settings")
        changed = changed_audio(record.get("audio_stamps") or {}, stamps, utts)
        if previous == settings and not changed:
            log.info("job %d: already done (%s); skipping", args.job, done)
            return
        if changed:
            log.warning("job %d: %d audio file(s) changed since they were extracted (%s); re-extracting: %s",
                        args.job, len(changed), done, "; ".join(changed[:5]) + (" ..." if len(changed) > 5 else ""))
        else:
            log.info("job %d: settings differ from the finished run (%s vs %s); re-extracting", args.job,
                     previous, settings)
    # Nothing may describe the ark while it is rewritten: neither this job's scp/done nor a merged
    # feats.scp from an earlier run.
    for stale in (done, scp, out_dir / "feats.scp", out_dir / "feats.yaml"):
        stale.unlink(missing_ok=True)
    meta, suspects = extract(args, utts, settings, ark, scp)
    atomic_write(done, yaml.safe_dump({"settings": settings, "meta": meta, "audio_stamps": stamps,
                                       "suspect_audio": suspects}, sort_keys=False))


def extract(args, utts, settings, ark, scp):
    """Runs the frontend over ``utts`` into ark/scp; returns the job's metadata and its suspect
    clips (["utt kind file"], see AudioReader), which the merge sums up for the console."""
    import torch
    from tqdm import tqdm

    from genser.frontend import build_frontend

    start = time.time()
    frontend = build_frontend(settings["frontend"], device=args.device)
    check_pooling(frontend, args.pooling)
    keep = parse_layers(args.layers, frontend.num_layers)
    built = time.time()
    reader = AudioReader(target_sr=frontend.sample_rate, min_duration=getattr(args, "min_duration", 0.1))
    ids = list(utts)
    audio_s = 0.0
    bar = tqdm(total=len(ids), desc=f"extract job {args.job}", unit="utt", file=sys.stderr,
               mininterval=1.0 if sys.stderr.isatty() else 30.0)
    with ArkWriter(ark, scp, dtype=args.dtype) as writer:
        for b in range(0, len(ids), args.batch_size):
            batch = ids[b:b + args.batch_size]
            wavs = [speed_perturb(reader(u, *utts[u]), args.speed) for u in batch]
            for u, w in zip(batch, wavs):
                if frontend.max_samples is not None and w.numel() > frontend.max_samples:
                    raise ValueError(f"utt {u}: {w.numel() / frontend.sample_rate:.2f} s of audio ({utts[u][0]}) "
                                     f"is longer than the {frontend.max_samples / frontend.sample_rate:.0f} s "
                                     f"the frontend takes; cut it into segments")
            audio_s += sum(w.numel() for w in wavs) / frontend.sample_rate
            with torch.no_grad():
                layers, lengths = frontend(wavs)
            for u, feats in zip(batch, stack_layers(layers, lengths, keep)):
                check_finite(u, feats, f"the {frontend.spec.get('name', 'hf')} frontend output for {utts[u][0]}")
                writer(u, to_matrix(feats, args.pooling))
            bar.update(len(batch))
    bar.close()
    suspect = {k: reader.conversions[k] for k in ("short", "silent", "clipped") if reader.conversions[k]}
    if suspect:
        log.warning("job %d: suspect audio (see the warnings above): %s", args.job,
                    ", ".join(f"{n} {k}" for k, n in suspect.items()))
    wall = time.time() - built
    log.info("job %d: %d utts, %.1f s of audio in %.1f s (real-time factor %.4f; frontend loaded in %.1f s); "
             "%s: %.2f MB", args.job, len(ids), audio_s, wall, wall / max(audio_s, 1e-9), built - start, ark,
             ark.stat().st_size / 2 ** 20)
    suspects = [f"{utt} {kind} {where}" for utt, kind, where in reader.suspects]
    return {"frontend": frontend.describe(), "layers": keep, "num_layers": len(keep),
            "dim": frontend.hidden_size, "pooling": args.pooling, "dtype": args.dtype,
            "frame_rate": frontend.frame_rate, "whisper_mode": frontend.spec.get("whisper_mode"),
            "num_utts": len(ids), "audio_seconds": round(audio_s, 3), "wall_seconds": round(wall, 3),
            **({"speed": args.speed} if args.speed != 1.0 else {})}, suspects


# ---------------------------------------------------------------------------------------------
def merge(args):
    out_dir = Path(args.out_dir)
    if not args.nj or args.nj < 1:
        raise ValueError("--merge needs --nj (the number of extraction jobs)")
    missing = [j for j in range(1, args.nj + 1) if not all(p.is_file() for p in job_paths(out_dir, j))]
    if missing:
        raise RuntimeError(f"{out_dir}: extraction job(s) {' '.join(map(str, missing))} of {args.nj} did not "
                           f"finish (no feats.<job>.done/.scp/.ark); re-run stage 1 (finished jobs are skipped)")
    metas, entries, suspects = [], {}, []
    for job in range(1, args.nj + 1):
        _, scp, done = job_paths(out_dir, job)
        record = yaml.safe_load(done.read_text(encoding="utf-8"))
        metas.append(record["meta"])
        suspects += record.get("suspect_audio") or []
        for utt, loc in read_kv(scp).items():
            if utt in entries:
                raise RuntimeError(f"utt {utt} is in {scp} and in an earlier job's scp; re-split and re-run stage 1")
            entries[utt] = loc
    check_jobs_agree(out_dir, metas)
    if args.data_dir:
        check_coverage(args.data_dir, out_dir, entries)
    with atomic_open(out_dir / "feats.scp") as f:
        f.writelines(f"{utt} {entries[utt]}\n" for utt in sorted(entries))
    size = sum(job_paths(out_dir, j)[0].stat().st_size for j in range(1, args.nj + 1))
    keys = ("frontend", "layers", "num_layers", "dim", "pooling", "dtype", "frame_rate", "whisper_mode")
    meta = {k: metas[0][k] for k in keys}
    if metas[0].get("speed", 1.0) != 1.0:
        meta["speed"] = metas[0]["speed"]
    meta.update(num_utts=len(entries), nj=args.nj, size_mb=round(size / 2 ** 20, 3),
                audio_seconds=round(sum(m["audio_seconds"] for m in metas), 3))
    write_meta(out_dir, meta)
    report_suspects(out_dir, suspects)
    log.info("merged %d jobs: %d utts in %s; on disk %.2f MB (%.1f KB per utt)", args.nj, len(entries),
             out_dir / "feats.scp", size / 2 ** 20, size / 2 ** 10 / max(len(entries), 1))


def report_suspects(out_dir, suspects):
    """The jobs' warnings about short, silent and clipped clips reach only their logs: one summary
    line for the console (ser.sh shows the merge's output), and the list in suspect_audio.txt."""
    path = out_dir / "suspect_audio.txt"
    if not suspects:
        path.unlink(missing_ok=True)
        return
    with atomic_open(path) as f:
        f.writelines(f"{line}\n" for line in sorted(suspects))
    counts = Counter(line.split()[1] for line in suspects)
    log.warning("suspect audio: %s (%d clips; list: %s; the warnings: %s)",
                ", ".join(f"{counts[k]} {k}" for k in ("short", "silent", "clipped") if counts[k]),
                len(suspects), path, out_dir / "log" / "extract.*.log")


def check_jobs_agree(out_dir, metas):
    keys = ("frontend", "layers", "dim", "pooling", "dtype", "speed")
    for job, meta in enumerate(metas[1:], 2):
        diff = [k for k in keys if meta.get(k) != metas[0].get(k)]
        if diff:
            raise RuntimeError(f"{out_dir}: job {job} was extracted with other settings than job 1 ({diff}: "
                               f"{[meta.get(k) for k in diff]} vs {[metas[0].get(k) for k in diff]}); "
                               f"remove {out_dir} and re-run stage 1")


def check_coverage(data_dir, out_dir, entries):
    utts = set(read_audio(data_dir))
    missing = sorted(utts - set(entries))
    if missing:
        raise RuntimeError(f"{len(missing)} utts of {data_dir} have no features in {out_dir} (e.g. "
                           f"{', '.join(missing[:5])}); remove {out_dir} and re-run stage 1")
    extra = len(set(entries) - utts)
    if extra:
        log.warning("%d utts in %s are not in %s", extra, out_dir, data_dir)
