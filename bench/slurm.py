"""Wall time of the embedded synth recipe (egs/synth/run.sh, stages 0-5) under utils/run.pl and
under utils/slurm.pl on the one-node cluster of tests/slurm/setup.sh, side by side.

    sudo OMP_NUM_THREADS=1 tools/venv/bin/python bench/slurm.py --reps 2 --out bench/results/slurm.md

Each repetition runs the recipe from nothing in a fresh directory once per backend, alternating
which goes first, and checks that both RESULTS.md agree line for line (the date aside). The
cluster is started for the run and stopped afterwards unless it was already up. Needs root.
"""
import argparse
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchlib import machine_description, write_results

REPO = Path(__file__).resolve().parents[1]
SLURM_DIR = Path(os.environ.get("GENSER_SLURM_DIR", "/var/tmp/genser-slurm"))
STAGE = re.compile(r"^(\S+) \(ser\.sh:\d+:main\) (Stage \d|Successfully finished)")


def get_parser():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=1, help="runs per backend")
    parser.add_argument("--recipe_args", default="", help="extra egs/synth/run.sh arguments (default: none)")
    parser.add_argument("--work", type=Path, default=None, help="work dir (default: a temporary one)")
    parser.add_argument("--out", type=Path, default=REPO / "bench/results/slurm.md")
    return parser


def make_recipe(root):
    """egs/synth linked entry by entry, so that data/, dump/ and exp/ land under root."""
    dst = root / "egs" / "synth"
    dst.mkdir(parents=True)
    for entry in (REPO / "egs" / "synth").iterdir():
        if entry.name not in ("data", "dump", "exp", "downloads"):
            (dst / entry.name).symlink_to(entry.resolve())
    return dst


def run_once(root, backend, recipe_args):
    """(wall seconds, {stage: seconds}, RESULTS.md lines without the date) of one run from nothing."""
    recipe = make_recipe(root)
    bindir = Path(sys.executable).parent
    env = dict(os.environ, GENSER_BACKEND=backend, PATH=f"{bindir}:{os.environ['PATH']}",
               VIRTUAL_ENV=str(bindir.parent), SLURM_CONF=str(SLURM_DIR / "slurm.conf"))
    start = time.monotonic()
    res = subprocess.run(["./run.sh", *recipe_args.split()], cwd=recipe, env=env, capture_output=True, text=True)
    wall = time.monotonic() - start
    (root / "run.log").write_text(res.stderr)
    if res.returncode != 0:
        sys.exit(f"{backend} run failed; see {root / 'run.log'}")
    marks = [(m.group(2), time.mktime(time.strptime(m.group(1), "%Y-%m-%dT%H:%M:%S")))
             for m in map(STAGE.match, res.stderr.splitlines()) if m]
    stages = {name: later - t for (name, t), (_, later) in zip(marks, marks[1:])}
    results = next((recipe / "exp").glob("*/RESULTS.md")).read_text().splitlines()
    return wall, stages, [line for line in results if not line.startswith("- date:")]


def alive(pidfile):
    try:
        os.kill(int(pidfile.read_text()), 0)
        return True
    except (OSError, ValueError):
        return False


def cluster(action):
    script = REPO / "tests" / "slurm" / f"{action}.sh"
    res = subprocess.run(["bash", str(script)], capture_output=True, text=True)
    if res.returncode != 0:
        sys.exit(f"{script} failed:\n{res.stderr}")


def main(argv=None):
    args = get_parser().parse_args(argv)
    if os.geteuid() != 0:
        sys.exit("bench/slurm.py needs root (the one-node cluster of tests/slurm/setup.sh)")
    was_up = all(alive(SLURM_DIR / f) for f in ("slurmctld.pid", "slurmd.pid", "munge/munged.pid"))
    cluster("setup")
    walls = {"local": [], "slurm": []}
    stages = {"local": [], "slurm": []}
    load = []
    try:
        with tempfile.TemporaryDirectory(dir=args.work) as work:
            reference = None
            for rep in range(args.reps):
                order = ("local", "slurm") if rep % 2 == 0 else ("slurm", "local")
                for backend in order:
                    load.append(os.getloadavg()[0])
                    wall, times, results = run_once(Path(work) / f"{backend}{rep}", backend, args.recipe_args)
                    reference = reference or results
                    if results != reference:
                        sys.exit(f"RESULTS.md of the {backend} run {rep} differs from the first run's")
                    walls[backend].append(wall)
                    stages[backend].append(times)
                    print(f"rep {rep} {backend}: {wall:.1f} s", flush=True)
    finally:
        if not was_up:
            cluster("teardown")
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    names = list(stages["local"][0])
    rows = ["| backend | wall (median) | runs | " + " | ".join(names) + " |",
            "|---|---|---|" + "---|" * len(names)]
    for backend in ("local", "slurm"):
        cells = [f"{statistics.median(s[n] for s in stages[backend]):.0f}" for n in names]
        runs = " ".join(f"{w:.0f}" for w in walls[backend])
        rows.append(f"| {backend} | {statistics.median(walls[backend]):.1f} s | {runs} | " + " | ".join(cells) + " |")
    ratio = statistics.median(walls["slurm"]) / statistics.median(walls["local"])
    body = "\n".join([
        machine_description(),
        f"Load average (1 min) when each run started: {', '.join(f'{x:.1f}' for x in load)}.",
        "",
        f"egs/synth/run.sh {args.recipe_args}".rstrip() + f", from nothing, {args.reps} run(s) per backend "
        "(alternating order); seconds. Stage columns: from one stage's log line to the next (medians).",
        "",
        *rows,
        "",
        f"Slurm / run.pl wall time: {ratio:.2f}. RESULTS.md identical in every run (the date line aside).",
        f"Largest peak RSS of a process of the run.pl runs (Slurm's jobs are slurmd's children, not "
        f"this script's): {peak:.0f} MB.",
    ])
    write_results(args.out, title="Synth recipe: run.pl against Slurm (one-node cluster)", body=body,
                  argv=["bench/slurm.py", *(argv if argv is not None else sys.argv[1:])])


if __name__ == "__main__":
    main()
