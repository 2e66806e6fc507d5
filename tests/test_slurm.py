"""utils/slurm.pl and GENSER_BACKEND=slurm against a real one-node Slurm cluster.

The ``slurm`` fixture starts the cluster with tests/slurm/setup.sh and stops every daemon with
tests/slurm/teardown.sh when the module ends, passed or failed. It skips, saying why, where the
machine cannot run Slurm: not root, or the Debian packages missing (GENSER_SLURM_INSTALL=1, as
.ci/run sets it, lets setup.sh install them with apt-get). A cluster that was already up before
the tests is left running.
"""
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from test_recipe import exp_of, make_recipe, run_recipe

REPO = Path(__file__).resolve().parents[1]
SLURM_DIR = Path(os.environ.get("GENSER_SLURM_DIR", "/var/tmp/genser-slurm"))
SLURM_PL = str(REPO / "utils" / "slurm.pl")


def daemons_up():
    def alive(pidfile):
        try:
            os.kill(int(pidfile.read_text()), 0)
            return True
        except (OSError, ValueError):
            return False
    return all(alive(SLURM_DIR / f) for f in ("slurmctld.pid", "slurmd.pid", "munge/munged.pid"))


@pytest.fixture(scope="module")
def slurm():
    """The environment for Slurm's clients (SLURM_CONF) of a running one-node cluster."""
    if os.geteuid() != 0:
        pytest.skip("the Slurm tests need root (slurmd runs the jobs); run them as root or in CI")
    was_up = daemons_up()
    install = [] if os.environ.get("GENSER_SLURM_INSTALL") == "1" else ["--no-install"]
    res = subprocess.run(["bash", str(REPO / "tests/slurm/setup.sh"), *install], capture_output=True,
                         text=True, timeout=600)
    if res.returncode == 77:
        pytest.skip(res.stderr.strip().splitlines()[-1])
    try:
        assert res.returncode == 0, res.stderr
        yield {"SLURM_CONF": str(SLURM_DIR / "slurm.conf")}
    finally:
        if not was_up:
            down = subprocess.run(["bash", str(REPO / "tests/slurm/teardown.sh")], capture_output=True,
                                  text=True, timeout=120)
            assert down.returncode == 0, down.stderr


def run(args, cwd, env, timeout=120, **kwargs):
    return subprocess.run(args, cwd=cwd, env=dict(os.environ, **env), capture_output=True, text=True,
                          timeout=timeout, **kwargs)


def squeue(env, job_id):
    """{task: state} of a job array as squeue lists it (running tasks one by one)."""
    res = run(["squeue", "-h", "-j", job_id, "-o", "%i %T"], ".", env)
    assert res.returncode == 0, res.stderr
    return dict(line.split() for line in res.stdout.splitlines())


def wait_for(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def start_sleepers(tmp_path, env, name, njobs, seconds=300, options=()):
    """slurm.pl running an array of `sleep` jobs; returns (process, job id) once task 1 has
    started its log."""
    proc = subprocess.Popen([SLURM_PL, *options, f"JOB=1:{njobs}", f"log/{name}.JOB.log", "sleep", str(seconds)],
                            cwd=tmp_path, env=dict(os.environ, **env), stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    idfile = tmp_path / "log" / "q" / f"{name}.jobid"
    job_id = wait_for(lambda: idfile.exists() and idfile.read_text().strip().split(";")[0], 30, "a job id")
    wait_for(lambda: (tmp_path / "log" / f"{name}.1.log").exists(), 30, f"job {job_id}_1 to start")
    return proc, job_id


def test_calling_convention(tmp_path, slurm):
    res = run([SLURM_PL, "--max-jobs-run", "2", "JOB=1:3", "exp/log/x.JOB.log",
               "echo", "part JOB", "task=$SLURM_ARRAY_TASK_ID", "|", "tr", "a-z", "A-Z"], tmp_path, slurm)
    assert res.returncode == 0, res.stderr
    script = (tmp_path / "exp/log/q/x.sh").read_text()
    assert "#SBATCH --array=1-3%2" in script  # --max-jobs-run is the array throttle
    job_id = (tmp_path / "exp/log/q/x.jobid").read_text().split(";")[0].strip()
    for j in (1, 2, 3):
        log = (tmp_path / f"exp/log/x.{j}.log").read_text().splitlines()
        assert log[0] == f"# echo 'part {j}' task=$SLURM_ARRAY_TASK_ID | tr a-z A-Z"
        assert log[1].endswith(f"Slurm job {job_id}_{j}")
        assert log[2] == f"PART {j} TASK={j}"  # a pipe, and the task's own Slurm environment
        assert log[-1].startswith("# Ended (code 0)")
    # One job, no JOB range.
    res = run([SLURM_PL, "log/one.log", "echo", "one"], tmp_path, slurm)
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "log/one.log").read_text().splitlines()[2] == "one"


def test_failing_job_names_its_log(tmp_path, slurm):
    res = run([SLURM_PL, "JOB=1:2", "log/f.JOB.log", "test", "JOB", "-eq", "1"], tmp_path, slurm)
    assert res.returncode == 1
    assert "1 / 2 failed, log is in log/f.2.log" in res.stderr
    assert (tmp_path / "log/f.2.log").read_text().splitlines()[-1].startswith("# Ended (code 1)")


@pytest.mark.parametrize("option, message", [
    (["--gpu", "1"], "Invalid generic resource (gres) specification"),  # the node has no GPU
    (["--mem", "100000G"], "Memory specification can not be satisfied"),
])
def test_refused_submission_prints_sbatchs_message(tmp_path, slurm, option, message):
    res = run([SLURM_PL, *option, "JOB=1:2", "log/r.JOB.log", "true"], tmp_path, slurm)
    assert res.returncode == 1
    assert "sbatch refused log/q/r.sh" in res.stderr and message in res.stderr
    assert "failed, log is in" not in res.stderr  # no job ran, so no log is named
    assert not list((tmp_path / "log").glob("r.*.log"))


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_cancels_the_array(tmp_path, slurm, sig):
    proc, job_id = start_sleepers(tmp_path, slurm, "s", 4)
    os.killpg(proc.pid, sig)  # to its whole process group, as Ctrl-C in a terminal
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + sig, err
    assert f"cancelled Slurm job array {job_id}" in err
    assert squeue(slurm, job_id) == {}  # slurm.pl returns once Slurm has removed every task


def test_job_killed_by_slurm_is_reported_with_reason_and_log(tmp_path, slurm):
    proc, job_id = start_sleepers(tmp_path, slurm, "k", 2)
    res = run(["scancel", job_id], tmp_path, slurm)
    assert res.returncode == 0, res.stderr
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1
    j = 1
    assert f"job {j} (Slurm {job_id}_{j}) was killed by Slurm: CANCELLED" in err
    assert f"log is in log/k.{j}.log" in err
    log = (tmp_path / f"log/k.{j}.log").read_text()
    assert f"# Killed by Slurm: job {job_id}_{j} CANCELLED" in log
    assert re.search(r"# Slurm output .*CANCELLED AT", log)  # slurmstepd's own line
    assert log.splitlines()[-1].startswith("# Ended (code 143)")  # SIGTERM, as run.pl reports it


def children(pid):
    """The pids whose parent is pid."""
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def test_sigkill_of_the_recipes_group_cancels_the_array(tmp_path, slurm):
    # SIGKILL cannot be caught: slurm.pl's watcher, outside the recipe's process group,
    # sees slurm.pl gone and cancels the array, so no task runs on for a dead recipe.
    proc, job_id = start_sleepers(tmp_path, slurm, "k9", 2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    wait_for(lambda: squeue(slurm, job_id) == {}, 60, f"Slurm to remove job {job_id}")


def test_orphaned_task_does_not_end_the_next_runs_log(tmp_path, slurm):
    # The first slurm.pl and its watcher both die by SIGKILL (as when the submitting host's
    # processes are killed), so nothing cancels the task: it outlives them and ends (once the
    # second has started) while the second run's task, with the same log, still runs.
    orphan_cmd = "for i in $(seq 150); do [ -e second.started ] && break; sleep 0.2; done; touch orphan.done"
    first = subprocess.Popen([SLURM_PL, "log/o.log", "bash", "-c", orphan_cmd], cwd=tmp_path,
                             env=dict(os.environ, **slurm), stderr=subprocess.DEVNULL)
    idfile = tmp_path / "log/q/o.jobid"
    wait_for(lambda: idfile.exists() and idfile.read_text().strip(), 30, "a job id")
    wait_for(lambda: (tmp_path / "log/o.log").exists(), 30, "the first task to start")
    watchers = children(first.pid)
    assert watchers, "slurm.pl forked no watcher"
    for watcher in watchers:
        os.killpg(watcher, signal.SIGKILL)  # the watcher leads its own group (with sbatch)
    first.kill()
    first.wait()
    res = run([SLURM_PL, "log/o.log", "bash", "-c", "touch second.started; sleep 3; exit 3"], tmp_path, slurm)
    assert res.returncode == 1
    ended = [line for line in (tmp_path / "log/o.log").read_text().splitlines() if line.startswith("# Ended")]
    assert len(ended) == 1 and ended[0].startswith("# Ended (code 3)"), ended
    # Not vacuous: the orphan ended while the second task ran.
    assert (tmp_path / "second.started").stat().st_mtime < (tmp_path / "orphan.done").stat().st_mtime


def test_synth_recipe_through_slurm_matches_run_pl(tmp_path, slurm, monkeypatch):
    # The smallest corpus that still has two folds, one model: the recipe's cost is mostly
    # process start-up, so this is the end-to-end check, not a benchmark (bench/slurm.py is).
    args = ["--local_data_opts", "--num_speakers 4 --utts_per_class 2 --num_folds 2",
            "--train_args", "--epochs 2", "--models", "genser", "--nsteps", "1"]
    results = {}
    for backend in ("local", "slurm"):
        monkeypatch.setenv("GENSER_BACKEND", backend)
        for key, value in slurm.items():
            monkeypatch.setenv(key, value)
        recipe = make_recipe(tmp_path / backend)
        res = run_recipe(recipe, *args, timeout=600)
        assert res.returncode == 0, res.stderr[-4000:]
        exp = exp_of(recipe, "emotion_*_train_epochs2")
        results[backend] = [line for line in (exp / "RESULTS.md").read_text().splitlines()
                            if not line.startswith("- date:")]
    assert results["slurm"] == results["local"]
    # It really ran through Slurm, as an array, asking for memory and (CPU-only node) no GPU.
    train = (exp / "seed0/genser/log/q/train.sh").read_text()
    assert "#SBATCH --array=1-2%2" in train and "#SBATCH --mem=4G" in train and "gres" not in train
    assert re.search(r"Slurm job \d+_1$", (exp / "seed0/genser/log/train.1.log").read_text().splitlines()[1])


def test_controller_that_never_answers_ends_the_wait(tmp_path, slurm):
    # Runs last: it stops slurmctld, then starts it again on the saved state.
    waiter, waited = start_sleepers(tmp_path, slurm, "w", 1, seconds=60, options=["--controller-timeout", "3"])
    ctld_pid = int((SLURM_DIR / "slurmctld.pid").read_text())
    os.kill(ctld_pid, signal.SIGTERM)
    wait_for(lambda: not Path(f"/proc/{ctld_pid}").exists(), 30, "slurmctld to stop")
    try:
        _, err = waiter.communicate(timeout=60)
        assert waiter.returncode == 1
        assert "has not answered for" in err and f"giving up on job array {waited}" in err
    finally:
        res = run(["slurmctld", "-f", slurm["SLURM_CONF"]], tmp_path, slurm)
        assert res.returncode == 0, res.stderr
        wait_for(lambda: "UP" in run(["scontrol", "ping"], tmp_path, slurm).stdout, 30, "slurmctld")
        run(["scancel", waited], tmp_path, slurm)
        wait_for(lambda: squeue(slurm, waited) == {}, 60, f"job {waited} to go")


@pytest.mark.parametrize("device, nproc, extract, train", [
    ("cpu", "1", "utils/slurm.pl --mem 4G", "utils/slurm.pl --mem 4G"),
    ("cpu", "2", "utils/slurm.pl --mem 4G", "utils/slurm.pl --mem 4G --num-threads 2"),
    ("cuda", "1", "utils/slurm.pl --mem 4G --gpu 1", "utils/slurm.pl --mem 4G --gpu 1"),
    ("cuda:1", "2", "utils/slurm.pl --mem 4G --gpu 1", "utils/slurm.pl --mem 4G --gpu 2"),
])
def test_cmd_sh_requests_follow_the_device(device, nproc, extract, train):
    """No cluster needed: what egs/TEMPLATE/cmd.sh asks Slurm for, per --device/--train_nproc."""
    script = f'device={device} train_nproc={nproc}; . egs/TEMPLATE/cmd.sh; printf "%s\\n" "$extract_cmd" "$train_cmd" "$decode_cmd"'
    env = {k: v for k, v in os.environ.items() if not k.startswith("GENSER_SLURM_")}
    res = subprocess.run(["bash", "-c", script], cwd=REPO, env=dict(env, GENSER_BACKEND="slurm"),
                         capture_output=True, text=True, check=True)
    assert res.stdout.splitlines() == [extract, train, extract.replace("4G", "2G")]


def test_cmd_sh_site_settings_come_from_the_environment():
    script = 'device=cuda; . egs/TEMPLATE/cmd.sh; printf "%s\\n" "$extract_cmd" "$train_cmd"'
    env = dict(os.environ, GENSER_BACKEND="slurm", GENSER_SLURM_ARGS="--partition cpu --time 1:00:00",
               GENSER_SLURM_GPU_ARGS="--partition gpu", GENSER_SLURM_EXTRACT_MEM="", GENSER_SLURM_TRAIN_MEM="12G")
    res = subprocess.run(["bash", "-c", script], cwd=REPO, env=env, capture_output=True, text=True, check=True)
    assert res.stdout.splitlines() == [
        "utils/slurm.pl --partition cpu --time 1:00:00 --gpu 1 --partition gpu",
        "utils/slurm.pl --partition cpu --time 1:00:00 --mem 12G --gpu 1 --partition gpu",
    ]
    local = subprocess.run(["bash", "-c", ". egs/TEMPLATE/cmd.sh; echo $train_cmd"], cwd=REPO,
                           env=dict(os.environ, GENSER_BACKEND="local"), capture_output=True, text=True)
    assert local.stdout.strip() == "utils/run.pl"
