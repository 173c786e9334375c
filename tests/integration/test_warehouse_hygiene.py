"""What lies in the warehouse and the artifact folders besides tables and artifacts, through `keiko stage
extract` as the operator runs it: a folder named like SQL is refused in one line and nothing of it runs;
lost+found and hidden folders are ignored; a killed write's temporary file is gone after the next run."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import DS, END_DATE, kill_a_writer_mid_write
from keiko.process import EXIT_USER_ERROR

INJECTION = "x AS SELECT 1; COPY (SELECT 42) TO 'pwned.csv'; --"


@pytest.fixture(scope="module")
def small_warehouse(tmp_path_factory) -> Path:
    """ctr's 8-day window at 2,000 rows a day: extract takes a second."""
    from keiko.synth import write_warehouse

    directory = tmp_path_factory.mktemp("hygiene") / "warehouse"
    write_warehouse(directory, END_DATE, 8, 2_000, progress=lambda _m: None)
    return directory


@pytest.fixture
def workspace(tmp_path, monkeypatch, small_warehouse) -> Path:
    """A KEIKO_HOME with a private copy of the warehouse, and an empty working directory, under tmp_path."""
    shutil.copytree(small_warehouse, tmp_path / "warehouse")
    (tmp_path / "cwd").mkdir()
    monkeypatch.setenv("KEIKO_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("KEIKO_WAREHOUSE_DIR", str(tmp_path / "warehouse"))
    return tmp_path


def extract(workspace: Path) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "keiko", "stage", "extract", "--model", "ctr", "--ds", DS]
    return subprocess.run(command, cwd=workspace / "cwd", env=os.environ, capture_output=True, text=True, timeout=300)


def run_dir(workspace: Path) -> Path:
    return workspace / "home" / "artifacts" / "ctr" / DS


def test_a_folder_named_like_sql_is_refused_in_one_line_and_writes_nothing(workspace):
    # With data in it, as a table would have: it looks like a table in every way but its name.
    shutil.copytree(workspace / "warehouse" / "clicks", workspace / "warehouse" / INJECTION)
    result = extract(workspace)
    assert result.returncode == EXIT_USER_ERROR, result.stdout + result.stderr
    assert result.stderr.splitlines() == [
        f'keiko: error: warehouse folder "{INJECTION}" in {workspace / "warehouse"} is not a table name '
        "(lowercase letters, digits and _, starting with a letter): rename it, or move it out of the warehouse"
    ]
    assert "Traceback" not in result.stdout
    assert list(workspace.rglob("pwned*")) == []  # not in the working directory, the warehouse or the home
    assert not (run_dir(workspace) / "raw.parquet").exists()


def test_lost_found_and_hidden_folders_are_ignored(workspace):
    for name in ("lost+found", ".snapshot", "_temporary"):
        (workspace / "warehouse" / name).mkdir()
    result = extract(workspace)
    assert result.returncode == 0, result.stdout + result.stderr
    assert (run_dir(workspace) / "raw.parquet").exists()


def test_the_next_extract_removes_what_a_killed_one_left(workspace):
    left = kill_a_writer_mid_write(run_dir(workspace) / "raw.parquet")
    result = extract(workspace)
    assert result.returncode == 0, result.stdout + result.stderr
    assert not left.exists()
    assert sorted(run_dir(workspace).glob(".tmp-*")) == []
    assert (run_dir(workspace) / "raw.parquet").exists()
