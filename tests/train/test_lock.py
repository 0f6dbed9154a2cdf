"""One run per directory: a second `RunLock` on a held directory fails at once naming the holder; the lock
goes with the holding process however it ends (kill -9 included)."""
import multiprocessing
import os
import signal

import pytest

from argen.errors import ArgenError, ConfigError, RunLockedError
from argen.train.lock import LOCK_NAME, RunLock, holds_run_lock

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="flock: POSIX only (no lock on Windows)")
# spawn, not fork: the test process runs torch's and tqdm's threads, and forking a threaded process can deadlock
_fork = multiprocessing.get_context("spawn")


def _hold(directory, conn):
    """Child: take the lock, say so, then hold it until told to stop (or killed)."""
    with RunLock(directory):
        conn.send("locked")
        conn.poll(30)  # a pipe, not an Event: killing a waiter on a multiprocessing Event deadlocks its setter


@pytest.fixture
def holder(tmp_path):
    """A second process holding the lock of tmp_path / 'run', and a function that lets it finish."""
    ours, theirs = _fork.Pipe()
    proc = _fork.Process(target=_hold, args=(tmp_path / "run", theirs))
    proc.start()
    assert ours.poll(30) and ours.recv() == "locked"
    yield proc, lambda: ours.send("done")
    if proc.is_alive():
        proc.kill()
    proc.join()


def test_a_second_process_is_refused_with_the_holders_pid(tmp_path, holder):
    proc, finish = holder
    with pytest.raises(RunLockedError) as e:
        RunLock(tmp_path / "run").acquire()
    msg = str(e.value)
    assert isinstance(e.value, ArgenError) and "\n" not in msg
    assert msg.startswith(f"{tmp_path / 'run'} is in use by another run (pid {proc.pid});")
    finish()  # the holder finishes normally and releases
    proc.join(30)
    assert proc.exitcode == 0
    with RunLock(tmp_path / "run") as lock:
        assert lock.held and (tmp_path / "run" / LOCK_NAME).read_text().startswith(f"pid {os.getpid()} ")


def test_a_killed_holder_leaves_no_lock_behind(tmp_path, holder):
    proc, _ = holder
    with pytest.raises(RunLockedError):
        RunLock(tmp_path / "run").acquire()
    os.kill(proc.pid, signal.SIGKILL)  # crashed: nothing released the lock but the kernel
    proc.join(30)
    assert proc.exitcode == -signal.SIGKILL
    lock = RunLock(tmp_path / "run").acquire()
    assert lock.held
    lock.release()


def test_the_same_process_cannot_hold_a_directory_twice(tmp_path):
    with RunLock(tmp_path / "run"):
        with pytest.raises(RunLockedError, match=rf"pid {os.getpid()}"):
            RunLock(tmp_path / "run").acquire()
        with RunLock(tmp_path / "other"):  # another directory is another lock
            pass
    with RunLock(tmp_path / "run"):  # released on exit
        pass
    assert (tmp_path / "run" / LOCK_NAME).read_text() == ""  # the pid is cleared on release


def test_a_file_in_place_of_the_directory_is_refused(tmp_path):
    (tmp_path / "run").write_text("x")
    with pytest.raises(ConfigError, match="is a file"):
        RunLock(tmp_path / "run").acquire()


def test_holds_run_lock_locks_the_out_directory_for_the_whole_call(tmp_path, holder):
    ran = []

    @holds_run_lock
    def recipe(preset, *, out, steps=1):
        ran.append(out)
        with pytest.raises(RunLockedError):  # the body runs with the lock held
            RunLock(out).acquire()
        return preset, steps

    assert recipe("x", out=tmp_path / "free", steps=3) == ("x", 3)
    with RunLock(tmp_path / "free"):  # released after the call
        pass
    with pytest.raises(RunLockedError, match=f"pid {holder[0].pid}"):
        recipe("x", out=tmp_path / "run")  # held by another process: refused before the body runs
    assert ran == [tmp_path / "free"]
    with pytest.raises(TypeError, match="no `out` parameter"):
        holds_run_lock(lambda path: None)
