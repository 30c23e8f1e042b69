"""Run a multi-process command so that nothing outlives the test: its own session (process
group); on timeout the whole group is killed; afterwards no member of the group may remain."""
import os
import signal
import subprocess
import time


def live_members(pgid):
    """ pids of the processes in group pgid that are not zombies (Linux /proc; else a probe) """
    if os.path.isdir("/proc/self"):
        pids = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()        # after "pid (comm)"
            except OSError:                                            # gone meanwhile
                continue
            state, pgrp = fields[0], int(fields[2])
            if pgrp == pgid and state != "Z":
                pids.append(int(entry))
        return pids
    try:
        os.killpg(pgid, 0)
        return [pgid]
    except ProcessLookupError:
        return []


def run_in_own_session(cmd, timeout, grace=15, **kwargs):
    """ subprocess.run(cmd) in a new session; kill its process group on timeout, and raise if
    any process of the group (a worker, a resource tracker) is still alive `grace` s after it """
    proc = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kwargs)
    pgid = proc.pid                                                    # the session leader's group
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(pgid, signal.SIGKILL)
        out, err = proc.communicate()
        raise AssertionError(f"{cmd} ran past {timeout} s; its process group was killed\n{err[-3000:]}")
    finally:
        deadline = time.monotonic() + grace
        while live_members(pgid) and time.monotonic() < deadline:
            time.sleep(0.1)
        left = live_members(pgid)
        if left:
            os.killpg(pgid, signal.SIGKILL)
    assert not left, f"{cmd} left processes {left} behind (killed now)"
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)
