"""The output folder rules and the run lock (``rundir``), and how ``predict`` applies them."""

import json
import os
import shutil
import socket
import subprocess
import sys
import time

import pandas as pd
import pytest

from conftest import EXAMPLES, run_cli
from virnucpro_kernel.errors import VirNucProError
from virnucpro_kernel.rundir import LOCK, RunLock, check_out_folder, clear_run

pytestmark = pytest.mark.slow  # whole runs of the command in subprocesses: `make test` only

INPUT = EXAMPLES / "viralverify_test.fa"
BASE = ["--chunk-size", "300", "--profile", "demo", "--gpus", "0", "--quiet"]


def _state(folder):
    """Every file under ``folder`` with its bytes and modification time."""
    return {str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _fail(r, *needles):
    assert r.returncode == 2, r.stdout + r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("virnucpro: error:") and "Traceback" not in r.stderr, r.stderr
    for n in needles:
        assert n in last, last


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    out = tmp_path_factory.mktemp("finished") / "out"
    r = run_cli("predict", INPUT, "--out", out, *BASE)
    assert r.returncode == 0, r.stderr
    return out


def test_rules_on_plain_folders(tmp_path):
    assert check_out_folder(tmp_path / "absent", resume=False, force=False) == "new"
    (tmp_path / "empty").mkdir()
    assert check_out_folder(tmp_path / "empty", resume=False, force=False) == "new"
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(VirNucProError, match="already holds files"):
        check_out_folder(tmp_path / "other", resume=False, force=False)
    with pytest.raises(VirNucProError, match="holds no run to continue"):
        check_out_folder(tmp_path / "other", resume=True, force=False)
    assert check_out_folder(tmp_path / "other", resume=False, force=True) == "force"
    with pytest.raises(VirNucProError, match="exclude each other"):
        check_out_folder(tmp_path / "other", resume=True, force=True)
    (tmp_path / "file").write_text("x")
    with pytest.raises(VirNucProError, match="not a folder"):
        check_out_folder(tmp_path / "file", resume=False, force=False)


def test_second_run_into_a_finished_folder_is_refused_and_changes_nothing(finished):
    before = _state(finished)
    _fail(run_cli("predict", INPUT, "--out", finished, *BASE), "already holds a finished run", "--force",
          "--resume")
    assert _state(finished) == before


def test_resume_on_a_finished_run_says_so_and_changes_nothing(finished):
    before = _state(finished)
    r = run_cli("predict", INPUT, "--out", finished, *BASE, "--resume")
    assert r.returncode == 0, r.stderr
    assert "finished run" in r.stdout
    assert _state(finished) == before


def test_force_starts_over_and_keeps_what_the_run_did_not_write(finished, tmp_path):
    out = tmp_path / "forced"
    r = run_cli("predict", INPUT, "--out", out, *BASE)
    assert r.returncode == 0
    (out / "my_notes.txt").write_text("keep me")
    (out / "sequences.tsv").write_text("stale")
    (out / ".work" / "units").mkdir(parents=True)
    (out / ".work" / "units" / "unit_00000015.npz").write_bytes(b"a unit of another run")
    r = run_cli("predict", INPUT, "--out", out, *BASE, "--force")
    assert r.returncode == 0, r.stderr
    assert (out / "my_notes.txt").read_text() == "keep me"
    assert not (out / ".work").exists() and not (out / LOCK).exists()
    assert (out / "sequences.tsv").read_text() == (finished / "sequences.tsv").read_text()
    assert (out / "prediction_results.txt").read_bytes() == (finished / "prediction_results.txt").read_bytes()


def test_clear_run_removes_only_run_files(tmp_path):
    for name in ("run.json", "viral.fa", "keep.csv", ".sequences.tsv.123.ab.tmp"):
        (tmp_path / name).write_text("x")
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "predict_1.log").write_text("x")
    (tmp_path / "data").mkdir()
    assert sorted(clear_run(tmp_path)) == [".sequences.tsv.123.ab.tmp", "logs", "run.json", "viral.fa"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "keep.csv"]


def test_live_lock_refuses_stale_lock_is_taken_over_foreign_host_refuses(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (out / LOCK).write_text(json.dumps({"host": socket.gethostname(), "pid": sleeper.pid, "started": "t"}))
        _fail(run_cli("predict", INPUT, "--out", out, *BASE), "in use by another run", f"PID {sleeper.pid}", LOCK)
        with pytest.raises(VirNucProError, match="in use by another run"):
            RunLock(out).acquire()
    finally:
        sleeper.kill()
        sleeper.wait()
    # the process is gone: the lock is stale, taken over with a warning
    with pytest.warns(UserWarning, match="taking over the lock"):
        lock = RunLock(out).acquire()
    assert json.loads((out / LOCK).read_text())["pid"] == os.getpid()
    lock.release()
    assert not (out / LOCK).exists()
    (out / LOCK).write_text(json.dumps({"host": "another-machine.example", "pid": 1, "started": "t"}))
    with pytest.raises(VirNucProError, match="another-machine.example"):
        RunLock(out).acquire()


def test_two_runs_into_one_folder_at_once(tmp_path):
    """The second run finds the first one's lock and stops; the first finishes with its own units only."""
    out = tmp_path / "out"
    slow = [sys.executable, "-m", "virnucpro_kernel", "predict", str(INPUT), "--out", str(out), *BASE,
            "--unit-records", "1", "--token-budget", "1"]
    first = subprocess.Popen(slow, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not (out / LOCK).exists():
        time.sleep(0.05)
    assert (out / LOCK).exists()
    second = run_cli("predict", INPUT, "--out", out, *BASE)
    _fail(second, "in use by another run")
    _, err = first.communicate(timeout=300)
    assert first.returncode == 0, err
    seqs = pd.read_csv(out / "sequences.tsv", sep="\t")
    assert len(seqs) == 5 and not (out / LOCK).exists()


def test_lock_records_host_pid_and_start(tmp_path):
    with RunLock(tmp_path) as lock:
        held = json.loads((tmp_path / LOCK).read_text())
        assert held["host"] == socket.gethostname() and held["pid"] == os.getpid() and held["started"]
        assert lock.held
    assert not (tmp_path / LOCK).exists()


def test_two_runs_taking_over_one_stale_lock_do_not_both_hold_it(tmp_path, monkeypatch):
    """Run B takes over the stale lock between run A's staleness check and A's takeover: A must then find B's
    live lock and refuse, not remove it (an unconditional unlink let both runs hold the folder)."""
    import virnucpro_kernel.rundir as rundir

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / LOCK).write_text(json.dumps({"host": socket.gethostname(), "pid": dead.pid, "started": "t"}))
    real_check = rundir.check_lock
    second = RunLock(tmp_path)
    interleaved = []

    def check_then_let_b_in(out):
        stale = real_check(out)
        if stale is not None and not interleaved:
            interleaved.append(True)
            second.acquire()  # B: the whole takeover, right after A saw the lock stale
        return stale

    monkeypatch.setattr(rundir, "check_lock", check_then_let_b_in)
    with pytest.warns(UserWarning, match="taking over"):
        with pytest.raises(VirNucProError, match="in use by another run"):
            RunLock(tmp_path).acquire()  # A
    assert second.held and json.loads((tmp_path / LOCK).read_text()) == second.record
    assert not list(tmp_path.glob(".virnucpro-takeover-*"))
    second.release()
    assert not (tmp_path / LOCK).exists()


def test_a_stale_lock_whose_takeover_never_finishes_is_refused_in_one_line(tmp_path, monkeypatch):
    import virnucpro_kernel.rundir as rundir

    monkeypatch.setattr(rundir, "TAKEOVER_WAIT_S", 0.2)
    stale = {"host": socket.gethostname(), "pid": 2 ** 22 + 12345, "started": "t"}  # above pid_max: gone
    (tmp_path / LOCK).write_text(json.dumps(stale))
    (tmp_path / rundir._takeover_name(stale)).write_text("")  # a run that died while taking it over
    with pytest.raises(VirNucProError, match="being taken over"):
        RunLock(tmp_path).acquire()
    assert json.loads((tmp_path / LOCK).read_text()) == stale


def test_confirm_refuses_a_folder_another_run_wrote_after_the_check(finished, tmp_path):
    from virnucpro_kernel.rundir import confirm_out_folder

    out = tmp_path / "out"
    assert check_out_folder(out, resume=False, force=False) == "new"
    out.mkdir()
    with RunLock(out):
        confirm_out_folder(out, "new", resume=False, force=False)  # only its own lock there: fine
        shutil.copytree(finished, out, dirs_exist_ok=True)
        with pytest.raises(VirNucProError, match="already holds a finished run"):
            confirm_out_folder(out, "new", resume=False, force=False)
        confirm_out_folder(out, "new", resume=False, force=True)  # --force starts over whatever is there


def test_run_that_finishes_while_another_starts_is_not_overwritten(finished, tmp_path, monkeypatch):
    """The folder is empty when ``predict`` checks it; a run finishes there during the input scan (before the
    lock): the starting run must refuse and leave the finished run as it is."""
    import virnucpro_kernel.prediction as prediction
    from virnucpro_kernel import api

    out = tmp_path / "out"
    real_scan = prediction.scan_input

    def scan_while_another_run_finishes(path):
        shutil.copytree(finished, out, dirs_exist_ok=True)
        return real_scan(path)

    monkeypatch.setattr(prediction, "scan_input", scan_while_another_run_finishes)
    with pytest.raises(VirNucProError, match="already holds a finished run"):
        api.predict(INPUT, chunk_size=300, out=out, profile="demo", gpus=0, quiet=True)
    assert _state(out) == _state(finished)
