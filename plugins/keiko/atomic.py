"""Atomic writes to local files, and the sweep of the temporary files that killed writers leave behind.

A write goes to a temporary file beside its target, which is then renamed over the target: readers see the
old file or the new one, never part of one. A writer killed before the rename leaves its temporary file, so
each write first sweeps the folder it writes into. The temporary file's name says whose it is,
`.tmp-<host>-<pid>-<random>`: one whose writer is a process of this host that is no longer running is
stale; one from another host (a shared volume) or with no writer in its name (keiko's older `.tmp-<random>`)
is stale once older than STALE_AFTER_SECONDS, far longer than any write takes. A live writer's is kept.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import time
import uuid
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)

TEMP_PREFIX = ".tmp-"
STALE_AFTER_SECONDS = 3600.0
_TEMP_NAME = re.compile(r"\.tmp-(?:(?P<host>.+)-(?P<pid>\d+)-)?[0-9a-f]{32}")


def temp_name() -> str:
    """A new temporary file name naming this process as its writer."""
    return f"{TEMP_PREFIX}{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex}"


def process_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, run by another user
        return True
    return True


def is_stale(name: str, age_seconds: float) -> bool:
    """Whether the file `name`, last written `age_seconds` ago, is a temporary file nobody will rename."""
    match = _TEMP_NAME.fullmatch(name)
    if match is None:
        return False  # not a temporary file of ours
    if match["host"] == socket.gethostname():
        return not process_running(int(match["pid"]))
    return age_seconds > STALE_AFTER_SECONDS


def sweep_stale_temps(directory: Path) -> list[str]:
    """Remove the stale temporary files directly in `directory`; the names removed."""
    removed = []
    try:
        entries = list(os.scandir(directory))
    except FileNotFoundError:
        return removed
    now = time.time()
    for entry in entries:
        if not entry.name.startswith(TEMP_PREFIX) or not entry.is_file(follow_symlinks=False):
            continue
        try:
            if is_stale(entry.name, now - entry.stat(follow_symlinks=False).st_mtime):
                os.unlink(entry.path)
                removed.append(entry.name)
        except FileNotFoundError:  # renamed by its writer, or removed by another sweep, meanwhile
            continue
    if removed:
        log.info("removed %d temporary file(s) of killed writers in %s: %s", len(removed), directory, removed)
    return removed


def write_atomically(path: Path, write: Callable[[Path], object]) -> None:
    """`write(temporary path)`, then rename it to `path`; the folder's stale temporary files are swept first,
    and this write's own is removed if `write` fails."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sweep_stale_temps(path.parent)
    temp = path.parent / temp_name()
    try:
        write(temp)
        temp.replace(path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
