"""Shared by the bench/ scripts: machine description, results files, quiet entry-point runs, EmoDB data."""
import datetime
import os
import shlex
import sys
import subprocess
from pathlib import Path

from genser.report import environment
from genser.fileio import atomic_write


def machine_description():
    threads = os.environ.get("OMP_NUM_THREADS", "unset")
    return f"Machine: {environment()}; OMP_NUM_THREADS={threads}; no GPU unless stated."


def write_results(path, *, title, body, argv):
    """Writes a results file headed by the date and the exact command line."""
    date = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    text = f"# {title}\n\n- date: {date}\n- command: `python {shlex.join(argv)}`\n\n{body.rstrip()}\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, text)
    print(f"wrote {path}")


def whisper_spec(folder):
    """The frontend spec of a local whisper-base folder, as egs/TEMPLATE/conf/frontend/whisper_base.yaml."""
    return {"type": "hf", "path": str(Path(folder).resolve()), "whisper_mode": "sliced"}


def quiet(module, argv, log_file):
    """Runs a genser entry point (``python -m module argv``, as a recipe stage does) with its
    console output appended to log_file (training also keeps its own train.log), so a benchmark
    prints one line per run instead. A failure stops the benchmark with a pointer to that log."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "a") as f:
        code = subprocess.run([sys.executable, "-m", module, *map(str, argv)], stdout=subprocess.DEVNULL,
                              stderr=f).returncode
    if code != 0:
        raise SystemExit(f"error: {module} {' '.join(map(str, argv))} failed ({code}); see {log_file}")


def prepare_emodb(emodb, work):
    """The EmoDB data dir (leave-one-speaker-out folds) under work/data/all; made once."""
    data = Path(work) / "data" / "all"
    if not (data / "utt2emo").exists():
        quiet("genser.bin.prepare_corpus", ["emodb", "--corpus_dir", str(emodb), "--data_dir", str(data)],
              Path(work) / "log" / "prepare.log")
    return data
