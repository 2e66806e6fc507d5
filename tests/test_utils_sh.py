"""utils/: parse_options.sh, run.pl, slurm.pl (with a fake sbatch) and the data-dir scripts."""
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

UTILS = Path(__file__).resolve().parents[1] / "utils"


def sh(args, cwd, env=None, check=False):
    full = dict(os.environ, GENSER_PYTHON=sys.executable, **(env or {}))
    res = subprocess.run(args, cwd=cwd, env=full, capture_output=True, text=True, timeout=120)
    if check:
        assert res.returncode == 0, res.stderr
    return res


# ---- parse_options.sh ----------------------------------------------------------------------
SCRIPT = textwrap.dedent(f"""\
    #!/usr/bin/env bash
    set -euo pipefail
    help_message="Usage: s.sh [options] <arg>"
    # General configuration
    stage=1          # First stage to run.
    feat_layers=all  # Layers to keep.
    use_gpu=false    # Train on the GPU.
    . {UTILS}/parse_options.sh
    echo "stage=$stage feat_layers=$feat_layers use_gpu=$use_gpu args=$*"
""")


@pytest.fixture
def script(tmp_path):
    path = tmp_path / "s.sh"
    path.write_text(SCRIPT)
    path.chmod(0o755)
    return path


def test_parse_options_sets_variables(script, tmp_path):
    res = sh([str(script), "--stage", "3", "--feat-layers", "0 3", "--use_gpu=true", "x", "--y"], tmp_path)
    assert res.returncode == 0, res.stderr
    assert res.stdout == "stage=3 feat_layers=0 3 use_gpu=true args=x --y\n"


def test_parse_options_rejects_undeclared_and_non_boolean(script, tmp_path):
    res = sh([str(script), "--stgae", "3"], tmp_path)
    assert res.returncode != 0 and "invalid option --stgae" in res.stderr
    res = sh([str(script), "--use-gpu", "yes"], tmp_path)
    assert res.returncode != 0 and "expected true or false, got 'yes'" in res.stderr
    res = sh([str(script), "--stage"], tmp_path)
    assert res.returncode != 0 and "needs a value" in res.stderr


def test_parse_options_config_and_help(script, tmp_path):
    (tmp_path / "c.conf").write_text("stage=7\nuse_gpu=true\n")
    res = sh([str(script), "--config", "c.conf", "--stage", "8"], tmp_path, check=True)
    assert res.stdout.startswith("stage=8 feat_layers=all use_gpu=true")
    res = sh([str(script), "--stage", "5", "--help"], tmp_path, check=True)
    assert "Usage: s.sh [options] <arg>" in res.stdout
    assert "# General configuration" in res.stdout
    lines = {line.split()[0]: line for line in res.stdout.splitlines() if line.strip().startswith("--")}
    assert '"5"' in lines["--stage"] and "# First stage to run." in lines["--stage"]
    assert '"false"' in lines["--use_gpu"] and "# Train on the GPU." in lines["--use_gpu"]


def test_parse_options_help_continuations_and_internal_variables(tmp_path):
    """A description continued on indented comment lines is printed whole; the variables set
    after the block of options (the script's own state) are neither listed nor settable."""
    path = tmp_path / "t.sh"
    path.write_text(textwrap.dedent(f"""\
        #!/usr/bin/env bash
        set -euo pipefail
        factors=        # Speed factors, e.g. "0.9 1.1":
                        # one dump per factor.
        models="a b"    # Models.
        help_message="Usage: t.sh"
        echo starting
        internal=false
        . {UTILS}/parse_options.sh
        echo "$options_given"
    """))
    path.chmod(0o755)
    res = sh([str(path), "--help"], tmp_path, check=True)
    lines = res.stdout.splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith("  --factors"))
    assert lines[first + 1].strip() == "# one dump per factor."
    assert lines[first + 1].index("#") == lines[first].index("#")
    assert "internal" not in res.stdout
    res = sh([str(path), "--internal", "true"], tmp_path)
    assert res.returncode != 0 and "invalid option --internal" in res.stderr
    res = sh([str(path), "--models", "x", "--factors", "0.9 1.1", "--models", "c d"], tmp_path, check=True)
    assert res.stdout.splitlines()[-1] == r"--models c\ d --factors 0.9\ 1.1"


# ---- run.pl --------------------------------------------------------------------------------
def test_run_pl_array_success_and_logs(tmp_path):
    res = sh([str(UTILS / "run.pl"), "JOB=1:3", "log/echo.JOB.log", "echo", "job", "JOB", "a b", "|",
              "tr", "a-z", "A-Z"], tmp_path)
    assert res.returncode == 0, res.stderr
    for j in (1, 2, 3):
        lines = (tmp_path / "log" / f"echo.{j}.log").read_text().splitlines()
        assert lines[0] == f"# echo job {j} 'a b' | tr a-z A-Z"
        assert lines[1].startswith("# Started at")
        assert lines[2] == f"JOB {j} A B"
        assert lines[-1].startswith("# Ended (code 0) at")


def test_run_pl_failure_names_failed_logs(tmp_path):
    res = sh([str(UTILS / "run.pl"), "--max-jobs-run", "2", "JOB=1:4", "log/t.JOB.log",
              "test", "JOB", "-ne", "3"], tmp_path)
    assert res.returncode == 1
    assert "1 / 4 failed, log is in log/t.3.log" in res.stderr
    assert "# Ended (code 1)" in (tmp_path / "log" / "t.3.log").read_text()
    assert "# Ended (code 0)" in (tmp_path / "log" / "t.4.log").read_text()


def test_run_pl_single_job_and_bounded_parallelism(tmp_path):
    sh([str(UTILS / "run.pl"), "log/one.log", "echo", "ok"], tmp_path, check=True)
    assert "ok" in (tmp_path / "log" / "one.log").read_text()
    # With one job at a time the start/end markers never interleave.
    sh([str(UTILS / "run.pl"), "--max-jobs-run", "1", "JOB=1:3", "log/s.JOB.log", "bash", "-c",
        "echo start JOB >> trace; sleep 0.2; echo end JOB >> trace"], tmp_path, check=True)
    trace = (tmp_path / "trace").read_text().split("\n")
    assert trace[:6] == ["start 1", "end 1", "start 2", "end 2", "start 3", "end 3"]


def test_run_pl_usage_errors(tmp_path):
    res = sh([str(UTILS / "run.pl"), "JOB=1:2", "log/no-job-var.log", "true"], tmp_path)
    assert res.returncode != 0 and "does not contain JOB" in res.stderr
    res = sh([str(UTILS / "run.pl"), "--bogus", "1", "log/x.log", "true"], tmp_path)
    assert res.returncode != 0 and "unknown option --bogus" in res.stderr


# ---- slurm.pl ------------------------------------------------------------------------------
FAKE_SBATCH = textwrap.dedent("""\
    #!/usr/bin/env bash
    # Fake sbatch: records its arguments, runs every array task of the script in turn.
    echo "$@" > sbatch.args
    script="${@: -1}"
    range=$(sed -n 's/^#SBATCH --array=\\([0-9]*-[0-9]*\\).*/\\1/p' "$script")
    worst=0
    for i in $(seq "${range%-*}" "${range#*-}"); do
      SLURM_ARRAY_TASK_ID=$i SLURM_ARRAY_JOB_ID=42 bash "$script" || worst=$?
    done
    echo 42
    exit $worst
""")


@pytest.fixture
def fake_sbatch(tmp_path):
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "sbatch").write_text(FAKE_SBATCH)
    (bindir / "sbatch").chmod(0o755)
    return {"PATH": f"{bindir}:{os.environ['PATH']}"}


def test_slurm_pl_success_maps_options(tmp_path, fake_sbatch):
    res = sh([str(UTILS / "slurm.pl"), "--mem", "4G", "--gpu", "1", "--time", "1:00:00",
              "--max-jobs-run", "2", "JOB=1:3", "exp/log/x.JOB.log", "echo", "part", "JOB"],
             tmp_path, env=fake_sbatch)
    assert res.returncode == 0, res.stderr
    args = (tmp_path / "sbatch.args").read_text()
    assert args.startswith("--wait") and "exp/log/q/x.sh" in args
    script = (tmp_path / "exp" / "log" / "q" / "x.sh").read_text()
    for flag in ("#SBATCH --array=1-3%2", "#SBATCH --mem=4G", "#SBATCH --gres=gpu:1",
                 "#SBATCH --time=1:00:00"):
        assert flag in script
    for j in (1, 2, 3):
        log = (tmp_path / "exp" / "log" / f"x.{j}.log").read_text().splitlines()
        assert log[0] == f"# echo part {j}" and log[2] == f"part {j}"
        assert log[-1].startswith("# Ended (code 0)")


def test_slurm_pl_failure_names_logs(tmp_path, fake_sbatch):
    res = sh([str(UTILS / "slurm.pl"), "JOB=1:3", "log/f.JOB.log", "test", "JOB", "-eq", "1"],
             tmp_path, env=fake_sbatch)
    assert res.returncode == 1
    assert "2 / 3 failed, log is in log/f.2.log" in res.stderr and "log/f.3.log" in res.stderr


def test_slurm_pl_without_sbatch_explains(tmp_path):
    res = sh([str(UTILS / "slurm.pl"), "log/x.log", "true"], tmp_path,
             env={"SBATCH": str(tmp_path / "no-such-sbatch")})
    assert res.returncode != 0 and "is Slurm installed?" in res.stderr


# ---- data-dir scripts ----------------------------------------------------------------------
def test_spk2utt_conversions_roundtrip(tmp_path):
    (tmp_path / "utt2spk").write_text("b_2 b\na_1 a\nb_1 b\n")
    res = sh([str(UTILS / "utt2spk_to_spk2utt.sh"), "utt2spk"], tmp_path, check=True)
    assert res.stdout == "a a_1\nb b_1 b_2\n"
    (tmp_path / "spk2utt").write_text(res.stdout)
    res = sh([str(UTILS / "spk2utt_to_utt2spk.sh"), "spk2utt"], tmp_path, check=True)
    assert res.stdout == "a_1 a\nb_1 b\nb_2 b\n"


def test_split_and_validate_scripts(tmp_path):
    from genser.datadir import load_data_dir, write_data_dir

    recs = [dict(utt=f"s{s}_{i}", path=f"/nonexistent/{s}_{i}.wav", spk=f"s{s}", emo="happy")
            for s in range(3) for i in range(3)]
    d = write_data_dir(tmp_path / "data", recs)
    res = sh([str(UTILS / "validate_data_dir.sh"), "--no-audio", "data"], tmp_path, check=True)
    assert "is valid: 9 utterances" in res.stderr
    res = sh([str(UTILS / "validate_data_dir.sh"), "data"], tmp_path)
    assert res.returncode == 1 and "audio file not found: /nonexistent/0_0.wav" in res.stderr
    sh([str(UTILS / "split_data.sh"), "data", "2"], tmp_path, check=True)
    assert [len(load_data_dir(d / "split2" / j)) for j in ("1", "2")] == [5, 4]
    assert (d / "split2" / ".done").is_file()


# ---- issue #22/#20: progress, and a killed slurm.pl cancels its array ------------------------
def test_run_pl_reports_progress_for_several_jobs_only(tmp_path):
    res = sh([str(UTILS / "run.pl"), "--max-jobs-run", "1", "JOB=1:3", "log/p.JOB.log", "test", "JOB",
              "-ne", "2"], tmp_path)
    assert res.returncode == 1
    lines = [x for x in res.stderr.splitlines() if "jobs done" in x]
    assert [x.split(",")[0] for x in lines] == ["run.pl: 1/3 jobs done", "run.pl: 2/3 jobs done (1 failed)",
                                                "run.pl: 3/3 jobs done (1 failed)"]
    assert lines[0].endswith(" left") and "elapsed" in lines[-1] and "left" not in lines[-1]
    res = sh([str(UTILS / "run.pl"), "log/one.log", "true"], tmp_path, check=True)
    assert "jobs done" not in res.stderr


SLOW_SBATCH = textwrap.dedent("""\
    #!/usr/bin/env bash
    # Fake sbatch --wait: accepts the array as job 77 and waits for it forever.
    echo $$ > sbatch.pid
    echo 77
    exec sleep 60
""")
FAKE_SCANCEL = '#!/usr/bin/env bash\necho "$@" >> "$(dirname "$0")/scancel.args"\n'


def test_slurm_pl_killed_by_sigkill_still_cancels_its_array(tmp_path):
    import signal
    import time

    bindir = tmp_path / "bin"
    bindir.mkdir()
    for name, text in (("sbatch", SLOW_SBATCH), ("scancel", FAKE_SCANCEL)):
        (bindir / name).write_text(text)
        (bindir / name).chmod(0o755)
    env = dict(os.environ, PATH=f"{bindir}:{os.environ['PATH']}")
    proc = subprocess.Popen([str(UTILS / "slurm.pl"), "JOB=1:2", "log/s.JOB.log", "true"], cwd=tmp_path,
                            env=env, start_new_session=True, stderr=subprocess.DEVNULL)
    jobid = tmp_path / "log" / "q" / "s.jobid"
    for _ in range(100):
        if jobid.is_file() and jobid.read_text().strip() == "77":
            break
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # the recipe's group: slurm.pl cannot catch this
    proc.wait()
    args = bindir / "scancel.args"
    for _ in range(100):
        if args.is_file():
            break
        time.sleep(0.05)
    assert args.is_file() and args.read_text().split() == ["77"]
    pid = int((tmp_path / "sbatch.pid").read_text())
    for _ in range(100):  # sbatch (here: its sleep) stopped too; a zombie that nobody reaps is gone
        stat = Path(f"/proc/{pid}/stat")
        if not stat.exists() or stat.read_text().rsplit(")", 1)[1].split()[0] == "Z":
            break
        time.sleep(0.05)
    else:
        raise AssertionError(f"sbatch (pid {pid}) still runs")
