"""A run's output folder: what a run writes there, whether a new run may use it, and the lock that keeps two
runs out of one folder.

Rules (``predict``):

* an ``--out`` that does not exist or is empty is used as it is;
* an ``--out`` that holds anything is refused, unless ``resume`` (continue the run that is there: an
  interrupted run is continued, a finished one is left as it is) or ``force`` (start over: the files an earlier
  run wrote there are removed, and nothing else);
* a running run holds ``OUT/.virnucpro.lock`` (host, PID, start time), created atomically and removed when the
  run ends. Another run finding it refuses and says how to clear it. A lock left by a process of this machine
  that no longer exists is stale: it is taken over with a warning. A lock from another machine is never taken
  over silently. Two runs finding the same stale lock cannot both take it: the takeover goes through a file
  named after that lock, created exclusively, and only the run that creates it removes the stale lock;
* the folder is checked again once the lock is held (``confirm_out_folder``): a run that finished or started
  there between the first check and the lock is not overwritten.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import os
import shutil
import socket
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

from .errors import VirNucProError

LOCK = ".virnucpro.lock"
WORK = ".work"
LOGS = "logs"
#: Files and folders a ``predict`` run writes into its output folder (besides temporary ``.*.tmp`` files).
RUN_FILES = ("prediction_results.txt", "prediction_results_highestscore.csv", "sequences.tsv", "viral.fa",
             "frames.parquet", "run.json")


def _is_run_temp(name: str) -> bool:
    return (name.startswith(".") and name.endswith(".tmp")) or name.startswith(".chunk-runs-")


def run_entries(out: Path) -> list[Path]:
    """What an earlier run wrote in ``out``: its outputs, logs, work units, temporary files and lock."""
    if not out.is_dir():
        return []
    names = set(RUN_FILES) | {WORK, LOGS, LOCK}
    return sorted(p for p in out.iterdir() if p.name in names or _is_run_temp(p.name))


@dataclass
class FolderState:
    exists: bool
    empty: bool
    finished: bool  # run.json present and no unfinished work
    interrupted: bool  # work units of an unfinished run
    foreign: list  # entries no run of this tool wrote


def folder_state(out: Path, *, own_lock: bool = False) -> FolderState:
    """What ``out`` holds; ``own_lock``: this process holds the lock there (the lock file does not count)."""
    if not out.exists():
        return FolderState(False, True, False, False, [])
    if not out.is_dir():
        raise VirNucProError(f"--out {out}: exists and is not a folder")
    entries = [p for p in out.iterdir() if not (own_lock and p.name == LOCK)]
    ours = set(run_entries(out))
    interrupted = (out / WORK / "manifest.json").is_file()
    return FolderState(True, not entries, (out / "run.json").is_file() and not interrupted, interrupted,
                       sorted(p.name for p in entries if p not in ours))


# ------------------------------------------------------------------------------------------------ lock


def _this_host() -> str:
    return socket.gethostname()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def read_lock(out: Path) -> dict | None:
    try:
        return json.loads((out / LOCK).read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {"host": "?", "pid": -1, "started": "?"}


def _describe(lock: dict) -> str:
    return f"host {lock.get('host')}, PID {lock.get('pid')}, started {lock.get('started')}"


def check_lock(out: Path) -> dict | None:
    """Refuse if a live run holds ``out``; returns a stale lock of this machine (to be taken over), else None."""
    lock = read_lock(out)
    if lock is None:
        return None
    if lock.get("host") == _this_host() and isinstance(lock.get("pid"), int) and lock["pid"] > 0 \
            and not _alive(lock["pid"]):
        return lock
    raise VirNucProError(f"--out {out} is in use by another run ({_describe(lock)}); wait for it to finish, or if "
                         f"that run is gone, remove {out / LOCK}")


TAKEOVER_WAIT_S = 5.0


def _takeover_name(lock: dict) -> str:
    """The claim file for taking over the stale lock ``lock`` (a run temp file: ``--force`` removes it)."""
    digest = hashlib.sha256(json.dumps(lock, sort_keys=True).encode()).hexdigest()[:16]
    return f".virnucpro-takeover-{digest}.tmp"


class RunLock:
    """``OUT/.virnucpro.lock`` for the life of a run (``with RunLock(out): ...``)."""

    def __init__(self, out: Path, command: str = "predict"):
        self.out = Path(out)
        self.path = self.out / LOCK
        self.record = {"host": _this_host(), "pid": os.getpid(), "command": command,
                       "started": _dt.datetime.now().astimezone().isoformat(timespec="seconds")}
        self.held = False

    def acquire(self) -> "RunLock":
        text = json.dumps(self.record)
        deadline = time.monotonic() + TAKEOVER_WAIT_S
        while True:
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            except FileExistsError:
                stale = check_lock(self.out)  # raises if a live run holds it
                if stale is not None and not self._take_over(stale) and time.monotonic() > deadline:
                    raise VirNucProError(f"--out {self.out}: the stale lock {self.path} is being taken over by "
                                         f"another run that does not finish; remove {self.path} and "
                                         f"{self.out / _takeover_name(stale)}") from None
                continue
            with os.fdopen(fd, "w") as fh:
                fh.write(text)
            self.held = True
            return self

    def _take_over(self, stale: dict) -> bool:
        """Remove the stale lock ``stale`` if this run is the one to take it over (False: another run is)."""
        claim = self.out / _takeover_name(stale)
        try:
            fd = os.open(claim, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            time.sleep(0.05)  # another run is taking this lock over: it will hold the folder, or give up
            return False
        os.close(fd)
        try:
            # only the holder of this claim removes this stale lock: if the file still is that lock, it stays
            # so until the unlink; if it is not, another run took over first and holds the folder now
            if read_lock(self.out) == stale:
                warnings.warn(f"{self.path}: taking over the lock of a run that is gone ({_describe(stale)})",
                              stacklevel=3)
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.path)
            return True
        finally:
            claim.unlink(missing_ok=True)

    def release(self) -> None:
        if self.held:
            lock = read_lock(self.out)
            if lock is not None and lock.get("pid") == self.record["pid"] and lock.get("host") == self.record["host"]:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.path)
            self.held = False

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()


# ------------------------------------------------------------------------------------------------ rules


def check_out_folder(out: Path, *, resume: bool, force: bool, own_lock: bool = False) -> str:
    """Whether a ``predict`` run may use ``out``: ``"new"`` (empty or absent), ``"resume"`` (an interrupted run
    to continue), ``"finished"`` (resume asked, the run there is finished: nothing to do) or ``"force"`` (start
    over). Refuses with one line otherwise. Writes nothing. ``own_lock``: this process holds the folder's lock."""
    if resume and force:
        raise VirNucProError("--resume and --force exclude each other (continue the run in --out, or start over)")
    state = folder_state(out, own_lock=own_lock)
    if not own_lock:
        check_lock(out)
    if state.empty:
        return "new"
    if resume:
        if state.interrupted:
            return "resume"
        if state.finished:
            return "finished"
        if state.foreign:
            raise VirNucProError(f"--resume: {out} holds no run to continue (it holds {', '.join(state.foreign[:3])}"
                                 f"{'...' if len(state.foreign) > 3 else ''})")
        return "new"
    if force:
        return "force"
    what = "a finished run" if state.finished else "an interrupted run" if state.interrupted else "files"
    raise VirNucProError(f"--out {out} already holds {what}; use --resume to continue it, --force to start over "
                         "(removes what an earlier run wrote there), or another --out")


def confirm_out_folder(out: Path, mode: str, *, resume: bool, force: bool) -> None:
    """Check ``out`` again once this run holds its lock: another run may have finished or started there since
    ``check_out_folder`` said ``mode``. Refuses with one line if the folder is no longer what it was."""
    now = check_out_folder(out, resume=resume, force=force, own_lock=True)
    if now != mode and not force:  # --force starts over whatever is there now
        was = {"new": "empty", "resume": "an interrupted run", "force": "files to replace"}.get(mode, mode)
        has = {"resume": "an interrupted run", "finished": "a finished run", "force": "files"}.get(now, now)
        raise VirNucProError(f"--out {out} changed while this run was starting (it held {was}, now {has}: another "
                             "run wrote there); run again to decide what to do with it")


def clear_run(out: Path, keep=(LOCK,)) -> list[str]:
    """Remove what an earlier run wrote in ``out`` (``--force``), nothing else; returns the names removed."""
    removed = []
    for p in run_entries(out):
        if p.name in keep:
            continue
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        else:
            p.unlink(missing_ok=True)
        removed.append(p.name)
    return removed
