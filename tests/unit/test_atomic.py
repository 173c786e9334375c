"""Atomic writes leave nothing behind: a killed writer's temporary file is removed by the next write into
its folder, and a live writer's is left alone (keiko.atomic)."""

import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from conftest import kill_a_writer_mid_write
from keiko.atomic import STALE_AFTER_SECONDS, sweep_stale_temps, write_atomically


def temp_of(pid: int, host: str | None = None) -> str:
    """The name a writer `pid` on `host` gives its temporary file (as keiko.atomic.temp_name does)."""
    return f".tmp-{host or socket.gethostname()}-{pid}-{uuid.uuid4().hex}"


def dead_pid() -> int:
    """The pid of a process that has ended."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def temps_in(directory: Path) -> list[str]:
    return sorted(path.name for path in directory.iterdir() if path.name.startswith(".tmp-"))


def test_the_next_write_removes_what_a_killed_writer_left(tmp_path):
    target = tmp_path / "run" / "raw.parquet"
    left = kill_a_writer_mid_write(target)
    assert left.read_bytes() == b"half of a file" and not target.exists()
    write_atomically(target, lambda temp: temp.write_bytes(b"whole"))
    assert temps_in(target.parent) == []
    assert target.read_bytes() == b"whole"


def test_a_running_writers_temporary_file_is_kept(tmp_path):
    running = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        names = [temp_of(running.pid), temp_of(os.getpid())]  # another process's, and another thread's of ours
        for name in names:
            (tmp_path / name).write_bytes(b"being written")
        assert sweep_stale_temps(tmp_path) == []
        assert temps_in(tmp_path) == sorted(names)
    finally:
        running.kill()
        running.wait()


@pytest.mark.parametrize(
    "name",
    [temp_of(4711, host="another-host.example"), f".tmp-{uuid.uuid4().hex}"],  # and keiko's older name
    ids=["another host", "no writer named"],
)
def test_a_temporary_file_whose_writer_cannot_be_asked_is_removed_once_old(name, tmp_path):
    temp = tmp_path / name
    temp.write_bytes(b"being written, or not")
    assert sweep_stale_temps(tmp_path) == []  # it may be a live writer's
    old = time.time() - STALE_AFTER_SECONDS - 60
    os.utime(temp, (old, old))
    assert sweep_stale_temps(tmp_path) == [name]
    assert not temp.exists()


def test_only_temporary_files_are_swept(tmp_path):
    keep = [".tmp-notes.txt", "raw.parquet", "tmp-" + uuid.uuid4().hex, ".hidden"]
    for name in keep:
        (tmp_path / name).write_bytes(b"x")
        os.utime(tmp_path / name, (0, 0))
    (tmp_path / temp_of(dead_pid())).mkdir()  # a folder named like one is not a temporary file
    assert sweep_stale_temps(tmp_path) == []
    assert len(list(tmp_path.iterdir())) == len(keep) + 1


def test_a_failed_write_removes_its_temporary_file_and_keeps_the_old_target(tmp_path):
    target = tmp_path / "model.npz"
    target.write_bytes(b"old")

    def fail(temp: Path) -> None:
        temp.write_bytes(b"half")
        raise OSError("No space left on device")

    with pytest.raises(OSError, match="No space left"):
        write_atomically(target, fail)
    assert target.read_bytes() == b"old"
    assert temps_in(tmp_path) == []
