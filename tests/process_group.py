"""Run a multi-process command so that nothing outlives the test. The command runs in its own
session, and every process it starts inherits a marker in its environment (torchrun starts each
worker in a session of its own, so the process group alone misses them). On timeout, and after
the run, every live process of the group or with the marker is killed, and a leftover fails."""
import pathlib
import os
import signal
import sys
import subprocess
import time
import uuid

MARKER = "DINO_REF_TEST_RUN"


def leftovers(pgid, token):
    """ pids, not zombies, in process group pgid or whose environment carries the token (Linux
    /proc; elsewhere a probe of the group only) """
    if not os.path.isdir("/proc/self"):
        try:
            os.killpg(pgid, 0)
            return [pgid]
        except ProcessLookupError:
            return []
    needle = f"{MARKER}={token}".encode()
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()            # after "pid (comm)"
            if fields[0] == "Z":
                continue
            if int(fields[2]) == pgid:
                pids.append(int(entry))
                continue
            with open(f"/proc/{entry}/environ", "rb") as f:
                if needle in f.read().split(b"\0"):
                    pids.append(int(entry))
        except OSError:                                                # gone, or not ours
            continue
    return pids


def _kill(pids):
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def run_in_own_session(cmd, timeout, grace=15, env=None, **kwargs):
    """ subprocess.run(cmd) in a new session; on timeout kill everything it started, and raise
    if any of its processes is still alive `grace` s after it ended """
    token = uuid.uuid4().hex
    env = dict(os.environ if env is None else env, **{MARKER: token})
    proc = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, **kwargs)
    pgid = proc.pid                                                    # the session leader's group
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill(leftovers(pgid, token))                                  # workers hold the pipes too
        out, err = proc.communicate(timeout=60)
        raise AssertionError(f"{cmd} ran past {timeout} s; its processes were killed\n{err[-3000:]}")
    finally:
        deadline = time.monotonic() + grace
        while leftovers(pgid, token) and time.monotonic() < deadline:
            time.sleep(0.1)
        left = leftovers(pgid, token)
        _kill(left)
    assert not left, f"{cmd} left processes {left} behind (killed now)"
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def two_rank_results(script, tmp, timeout=300):
    """ run `script` (a test file whose __main__ starts two gloo ranks writing tmp/out.<rank>) in
    a session of its own, importing this checkout, and load what each rank saved """
    import dino_ref
    import torch
    root = str(pathlib.Path(dino_ref.__file__).parents[1])            # the ranks import this checkout
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])))
    out = run_in_own_session([sys.executable, script, str(tmp)], timeout=timeout, cwd=str(tmp), env=env)
    assert out.returncode == 0, out.stderr
    return [torch.load(pathlib.Path(tmp) / f"out.{rank}") for rank in range(2)]
