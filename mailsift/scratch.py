"""Scratch files and directories under one known prefix, and the sweep that removes what
a killed process left behind.

Every temporary file or directory mailsift makes is named
``mailsift-<pid>-<kind>-<random>`` in the system temp directory (``$TMPDIR``), so the next
start can find what a ``SIGKILL``, an out-of-memory kill or a power cut left: work dirs
hold contacts' PII and downloads can be gigabytes. :func:`sweep` removes the entries whose
process is gone; an entry of a live process is never touched (a reused pid only delays
the clean-up, it never deletes live data).
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
from pathlib import Path

__all__ = ["PREFIX", "is_alive", "make_dir", "make_file", "owner", "owner_is_alive", "sweep"]

log = logging.getLogger(__name__)

PREFIX = "mailsift-"
_NAME = re.compile(rf"^{PREFIX}(\d+)-[a-z]+-")


def make_dir(kind: str, parent: str | os.PathLike[str] | None = None) -> str:
    """A new private directory ``mailsift-<pid>-<kind>-XXXX`` (in ``parent`` or $TMPDIR)."""
    return tempfile.mkdtemp(prefix=f"{PREFIX}{os.getpid()}-{kind}-", dir=parent)


def make_file(kind: str, suffix: str = "", parent: str | os.PathLike[str] | None = None) -> tuple[int, str]:
    """A new private file ``mailsift-<pid>-<kind>-XXXX<suffix>``: ``(fd, path)`` as mkstemp."""
    return tempfile.mkstemp(prefix=f"{PREFIX}{os.getpid()}-{kind}-", suffix=suffix, dir=parent)


def is_alive(pid: int) -> bool:
    """True when a process ``pid`` exists on this host (whoever owns it)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (``/proc/<pid>/stat`` field
    22), which tells a reused pid from the process that had it; None off Linux."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rpartition(")")[2].split()[19]


def owner() -> dict[str, object]:
    """Who runs this process: recorded with a run so a later start can tell it is gone."""
    import socket

    return {"pid": os.getpid(), "host": socket.gethostname(), "started": _start_time(os.getpid())}


def owner_is_alive(recorded: dict[str, object]) -> bool | None:
    """True/False when ``recorded`` (an :func:`owner`) is a process of this host that
    is / is no longer running; None when it cannot be told (another host, no pid)."""
    import socket

    pid = recorded.get("pid")
    if recorded.get("host") != socket.gethostname() or not isinstance(pid, int):
        return None
    if not is_alive(pid):
        return False
    started = recorded.get("started")
    return started is None or _start_time(pid) in (None, started)


def sweep(directory: str | os.PathLike[str] | None = None) -> list[Path]:
    """Remove the ``mailsift-<pid>-*`` entries of processes that no longer exist.

    Returns what was removed. Errors (a file removed meanwhile, no permission) are
    skipped: the sweep must never stop a run.
    """
    root = Path(directory or tempfile.gettempdir())
    removed: list[Path] = []
    try:
        entries = list(root.iterdir())
    except OSError:
        return removed
    for entry in entries:
        match = _NAME.match(entry.name)
        if not match or int(match.group(1)) == os.getpid() or is_alive(int(match.group(1))):
            continue
        try:
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
        except OSError:
            continue
        removed.append(entry)
    if removed:
        log.info("removed %d scratch entries left by killed runs in %s", len(removed), root)
    return removed
