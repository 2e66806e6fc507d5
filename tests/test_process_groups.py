"""Issue #22, cases 1 and 2: a killed recipe leaves no worker and no lock behind (real processes).

A stand-in recipe (bash) takes the dump dir's lock as ser.sh does (utils/lib/lock.sh) and runs
utils/run.pl with workers that sleep; the test kills it the way a user or a terminal does and
then looks for survivors in /proc.
"""
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

UTILS = Path(__file__).resolve().parents[1] / "utils"

RECIPE = textwrap.dedent(f"""\
    #!/usr/bin/env bash
    set -euo pipefail
    log() {{ echo "$*" >&2; }}
    . {UTILS}/lib/lock.sh
    lock_dir dump/x "give it another name (--feat_tag)"
    [ "${{1:-}}" = lock-only ] && {{ echo locked; exit 0; }}
    {UTILS}/run.pl --max-jobs-run 3 JOB=1:3 dump/x/log/w.JOB.log bash -c 'echo $$ > w.JOB.pid; exec sleep 60'
""")


def alive(pid):
    """True while ``pid`` runs (a zombie that nobody reaps counts as dead)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def wait_for(cond, timeout=10.0):
    end = time.time() + timeout
    while time.time() < end:
        if cond():
            return True
        time.sleep(0.05)
    return cond()


def hold(lock):
    """flock(1) holding ``lock`` (with its sleep) in a process group of its own."""
    return subprocess.Popen(["flock", str(lock), "sleep", "30"], start_new_session=True)


def release(holder):
    os.killpg(holder.pid, signal.SIGKILL)
    holder.wait()


@pytest.fixture
def recipe(tmp_path):
    path = tmp_path / "rec.sh"
    path.write_text(RECIPE)
    path.chmod(0o755)
    started = []

    def start():
        proc = subprocess.Popen([str(path)], cwd=tmp_path, start_new_session=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        started.append(proc)
        assert wait_for(lambda: all((tmp_path / f"w.{j}.pid").is_file() and (tmp_path / f"w.{j}.pid").read_text()
                                    for j in (1, 2, 3)))
        return proc, [int((tmp_path / f"w.{j}.pid").read_text()) for j in (1, 2, 3)]

    yield start
    for proc in started:  # whatever a failed test left: the whole group
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()


def relock(tmp_path):
    return subprocess.run([str(tmp_path / "rec.sh"), "lock-only"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=30)


def test_kill_9_of_the_recipes_group_leaves_no_worker_and_no_lock(tmp_path, recipe):
    proc, workers = recipe()
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert wait_for(lambda: not any(alive(p) for p in workers), 5), [p for p in workers if alive(p)]
    res = relock(tmp_path)
    assert res.returncode == 0 and "locked" in res.stdout, res.stderr


@pytest.mark.parametrize("sig", [signal.SIGHUP, signal.SIGTERM])
def test_hangup_or_term_of_the_group_ends_every_worker(tmp_path, recipe, sig):
    proc, workers = recipe()
    os.killpg(proc.pid, sig)
    proc.wait(timeout=20)
    assert wait_for(lambda: not any(alive(p) for p in workers), 10), [p for p in workers if alive(p)]
    assert relock(tmp_path).returncode == 0


def test_term_to_run_pl_alone_ends_its_jobs_and_marks_their_logs(tmp_path, recipe):
    proc, workers = recipe()
    runpl = int(subprocess.run(["pgrep", "-P", str(proc.pid), "-f", "run.pl"], capture_output=True,
                               text=True).stdout.split()[0])
    os.kill(runpl, signal.SIGTERM)
    assert proc.wait(timeout=20) != 0
    assert "interrupted (SIGTERM); ended 3 running job(s)" in proc.stderr.read()
    assert not any(alive(p) for p in workers)
    log = (tmp_path / "dump" / "x" / "log" / "w.2.log").read_text()
    assert "# Killed by run.pl on SIGTERM" in log and "# Ended (code 143)" in log


def test_a_recipe_killed_alone_takes_its_jobs_along(tmp_path, recipe):
    """kill -9 of the recipe's shell only: run.pl sees its parent go and ends the jobs."""
    proc, workers = recipe()
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert wait_for(lambda: not any(alive(p) for p in workers), 10), [p for p in workers if alive(p)]
    assert wait_for(lambda: relock(tmp_path).returncode == 0, 5)


def test_a_stale_lock_of_a_dead_run_is_taken_over_naming_it(tmp_path):
    """A worker that escaped (here: setsid sleep) keeps the lock; its recipe is dead."""
    script = tmp_path / "leaky.sh"
    script.write_text(textwrap.dedent(f"""\
        #!/usr/bin/env bash
        set -euo pipefail
        . {UTILS}/lib/lock.sh
        lock_dir dump/x "give it another name (--feat_tag)"
        setsid sleep 30 > /dev/null 2>&1 < /dev/null &
        echo "$! $$"
    """))
    script.chmod(0o755)
    out = subprocess.run([str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=30)
    leaked, dead = (int(x) for x in out.stdout.split())
    try:
        assert alive(leaked) and not alive(dead)
        rec = tmp_path / "rec.sh"
        rec.write_text(RECIPE)
        rec.chmod(0o755)
        res = relock(tmp_path)
        assert res.returncode == 0, res.stderr
        assert f"taking over the lock of dump/x from a dead run (pid {dead} on" in res.stderr
        assert f"may still write into dump/x: pids {leaked}\n" in res.stderr
        # The lock is now this run's (dead too): a third run takes it over from it, not from the first.
        res = relock(tmp_path)
        assert res.returncode == 0 and f"(pid {dead} on" not in res.stderr
    finally:
        os.kill(leaked, signal.SIGKILL)


def test_a_live_holder_is_refused_with_the_right_way_out(tmp_path):
    rec = tmp_path / "rec.sh"
    rec.write_text(RECIPE)
    rec.chmod(0o755)
    (tmp_path / "dump" / "x").mkdir(parents=True)
    lock = tmp_path / "dump" / "x" / ".lock"
    lock.write_text(f"pid {os.getpid()} on {socket.gethostname()} since now: pytest\n")
    holder = hold(lock)
    try:
        wait_for(lambda: relock(tmp_path).returncode != 0, 5)
        res = relock(tmp_path)
        assert res.returncode == 1
        assert f"dump/x is in use by pid {os.getpid()}" in res.stderr
        assert "--feat_tag" in res.stderr and "--exp_tag" not in res.stderr
    finally:
        release(holder)


def test_python_dir_lock_takes_over_from_a_dead_holder(tmp_path, caplog):
    from genser.lock import LockError, dir_lock

    folder = tmp_path / "exp"
    folder.mkdir()
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    lock = folder / ".lock"
    lock.write_text(f"pid {gone.pid} on {socket.gethostname()} since then: old run\n")
    orphan = hold(lock)
    try:
        assert wait_for(lambda: subprocess.run(["flock", "-n", str(lock), "true"]).returncode != 0, 5)
        with caplog.at_level("WARNING", logger="genser.lock"):
            with dir_lock(folder):
                assert f"pid {os.getpid()} on" in lock.read_text()
        assert f"taking over the lock of a dead run (pid {gone.pid} on" in caplog.text
        assert f"pids {orphan.pid}" in caplog.text
        # A live holder is still refused, with the caller's way out.
        lock.write_text(f"pid {os.getpid()} on {socket.gethostname()} since now: this test\n")
        holder = hold(lock)
        try:
            assert wait_for(lambda: subprocess.run(["flock", "-n", str(lock), "true"]).returncode != 0, 5)
            with pytest.raises(LockError, match=f"in use by pid {os.getpid()} .*use another --exp_tag"):
                with dir_lock(folder, hint="use another --exp_tag"):
                    pass
        finally:
            release(holder)
    finally:
        release(orphan)


def _recipe_processes(recipe):
    """Pids of the processes working in ``recipe`` (their cwd): the recipe's shells, run.pl, workers."""
    found = []
    for cwd in Path("/proc").glob("[0-9]*/cwd"):
        try:
            if Path(os.readlink(cwd)) == recipe and alive(int(cwd.parent.name)):
                found.append(int(cwd.parent.name))
        except OSError:
            continue
    return found


def _free(lock):
    return subprocess.run(["flock", "-n", str(lock), "true"]).returncode == 0


@pytest.mark.slow
def test_the_synth_recipe_killed_in_stage_1_and_hung_up_in_stage_3(tmp_path):
    """Cases 1 and 2 on the real ser.sh: kill -9 of the group in stage 1, SIGHUP in stage 3."""
    from test_recipe import SMALL, make_recipe, run_recipe

    recipe = make_recipe(tmp_path).resolve()
    res = run_recipe(recipe, *SMALL, "--stop_stage", "0", timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}", OMP_NUM_THREADS="1")

    def start(*args):
        return subprocess.Popen(["./run.sh", *SMALL, *args], cwd=recipe, env=env, start_new_session=True,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    def started(pattern):
        return any("# Started" in p.read_text() for p in recipe.glob(pattern))

    proc = start("--stage", "1", "--stop_stage", "1", "--extract_batch_size", "1")
    assert wait_for(lambda: started("dump/*/log/extract.*.log"), 60)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert wait_for(lambda: not _recipe_processes(recipe), 10), _recipe_processes(recipe)
    res = run_recipe(recipe, *SMALL, "--stage", "1", "--stop_stage", "2", timeout=300)
    assert res.returncode == 0 and "in use by" not in res.stderr, res.stderr[-3000:]

    proc = start("--stage", "3", "--stop_stage", "3")
    assert wait_for(lambda: started("exp/*/seed0/genser/log/train.*.log"), 60)
    # into the training processes: once a fold holds its lock (a fixed sleep was too short on a
    # loaded machine, where importing torch alone takes seconds)
    assert wait_for(lambda: any(recipe.glob("exp/*/seed0/*/fold_*/.lock")), 60)
    os.killpg(proc.pid, signal.SIGHUP)
    proc.wait(timeout=30)
    assert wait_for(lambda: not _recipe_processes(recipe), 15), _recipe_processes(recipe)
    locks = [*recipe.glob("dump/*/.lock"), *recipe.glob("exp/*/.lock"), *recipe.glob("exp/*/seed0/*/fold_*/.lock")]
    assert len(locks) >= 3 and all(_free(lock) for lock in locks), [lock for lock in locks if not _free(lock)]
