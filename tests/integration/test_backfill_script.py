"""`make backfill` refuses what cannot work, before asking Airflow for anything."""

import os
import subprocess

import pytest

from conftest import ROOT


def backfill(tmp_path, **variables: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "AIRFLOW_HOME": str(tmp_path / "airflow"), **variables}
    return subprocess.run([str(ROOT / "scripts" / "backfill.sh")], env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize(
    "variables, message",
    [
        ({"FROM": "2026-11-18"}, "MODEL=<model>"),
        ({"MODEL": "ctr", "FROM": "2026-11-31", "TO": "2026-12-02"}, "'2026-11-31' is not a day (YYYY-MM-DD)"),
        ({"MODEL": "ctr", "FROM": "20261118", "TO": "2026-11-20"}, "'20261118' is not a day"),
        ({"MODEL": "ctr", "FROM": "2026-11-20", "TO": "2026-11-18"}, "FROM=2026-11-20 is after TO=2026-11-18"),
        (
            {"MODEL": "ctr", "FROM": "2026-11-18", "TO": "2026-11-20"},
            "no Airflow scheduler is running here. Start one with 'make airflow'",
        ),
    ],
)
def test_make_backfill_refuses_bad_input_with_one_line(tmp_path, variables, message):
    result = backfill(tmp_path, **variables)
    assert result.returncode != 0
    assert message in result.stderr


def fake_airflow_checkout(tmp_path, create_fails_with: list[str], progress: tuple[str, ...] = ()):
    """The script beside a `.venv/bin` whose `airflow backfill create` fails with each given message in turn, and
    whose progress queries print each of `progress` in turn, then that all 3 runs succeeded.

    Every other step (scheduler check, the registry listing) succeeds at once.
    """
    (tmp_path / "scripts").mkdir(parents=True)
    script = tmp_path / "scripts" / "backfill.sh"
    script.write_text((ROOT / "scripts" / "backfill.sh").read_text())
    script.chmod(0o755)
    bin_dir = tmp_path / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    for number, message in enumerate(create_fails_with):
        (tmp_path / f"create-fails-{number}").write_text(message)
    for number, text in enumerate(progress):
        (tmp_path / f"progress-{number}").write_text(text)
    fakes = {
        "airflow": f"""
            [[ "$1 $2" == "backfill create" ]] || exit 0
            echo "$*" >> {tmp_path}/create-calls
            failure=$(ls {tmp_path}/create-fails-* 2>/dev/null | sort | head -1)
            [[ -z "$failure" ]] && {{ echo "Created backfill"; exit 0; }}
            cat "$failure" >&2; rm "$failure"; exit 1
        """,
        # keiko.oncall.backfill: no backfill in progress; each `progress` prints the next progress-* file, then done.
        "python": f"""
            [[ "$*" == *" active "* ]] && exit 0
            next=$(ls {tmp_path}/progress-* 2>/dev/null | sort | head -1)
            [[ -z "$next" ]] && {{ echo "3/3 runs finished {{'success': 3}} done"; exit 0; }}
            cat "$next"; rm "$next"
        """,
        "keiko": "echo 'ctr v1 historical'",
    }
    for name, body in fakes.items():
        (bin_dir / name).write_text(f"#!/usr/bin/env bash\n{body}\n")
        (bin_dir / name).chmod(0o755)
    return script


def run_fake_backfill(script, **variables: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "MODEL": "ctr", "FROM": "2026-11-18", "TO": "2026-11-20", "LOCKED_RETRY_SECONDS": "0"}
    env.update(variables)
    return subprocess.run([str(script)], env=env, capture_output=True, text=True, timeout=60)


def create_calls(tmp_path) -> list[str]:
    return (tmp_path / "create-calls").read_text().splitlines()


def test_make_backfill_asks_again_when_the_metadata_database_is_locked(tmp_path):
    locked = "sqlalchemy.exc.OperationalError: (sqlite3.OperationalError) database is locked"
    script = fake_airflow_checkout(tmp_path, [locked, locked])

    result = run_fake_backfill(script)

    assert result.returncode == 0, result.stderr
    assert len(create_calls(tmp_path)) == 3
    assert "the metadata database was busy; asking again (attempt 3)" in result.stderr
    assert "Created backfill" in result.stdout and "3/3 runs finished" in result.stdout


def test_make_backfill_waits_out_the_half_made_backfill_a_lock_left_behind(tmp_path):
    # Airflow's own clean-up of the half-made backfill can be locked out too; its scheduler then removes it
    # after 2 minutes, and until then `backfill create` says another backfill is running.
    locked = "(sqlite3.OperationalError) database is locked"
    orphan = "AlreadyRunningBackfill: Another backfill is running for Dag keiko_ctr."
    script = fake_airflow_checkout(tmp_path, [locked, orphan, orphan])

    result = run_fake_backfill(script)

    assert result.returncode == 0, result.stderr
    assert len(create_calls(tmp_path)) == 4
    assert "Created backfill" in result.stdout and "3/3 runs finished" in result.stdout


def test_make_backfill_gives_up_on_a_lasting_lock_and_on_any_other_error_at_once(tmp_path):
    locked = "(sqlite3.OperationalError) database is locked"
    script = fake_airflow_checkout(tmp_path / "locked", [locked] * 1000)
    result = run_fake_backfill(script, LOCKED_RETRY_DEADLINE="5", LOCKED_RETRY_SECONDS="0.2")
    assert result.returncode == 1
    assert 1 < len(create_calls(tmp_path / "locked")) < 1000
    assert "'airflow backfill create' failed (above)" in result.stderr

    running = "AlreadyRunningBackfill: Another backfill is running for Dag keiko_ctr."
    script = fake_airflow_checkout(tmp_path / "running", [running])
    result = run_fake_backfill(script)
    assert result.returncode == 1
    assert len(create_calls(tmp_path / "running")) == 1
    assert "Another backfill is running" in result.stderr and "runs finished" not in result.stdout


def test_make_backfill_shows_each_days_state_when_it_changes(tmp_path):
    waiting = "  2026-11-20 running: wait_for_data deferred, waiting for impressions/dt=2026-11-20 (1 of 16 missing)"
    polls = (
        f"0/3 runs finished {{'running': 3}} running\n  2026-11-18 running: extract running\n"
        f"  2026-11-19 running: train running\n{waiting}\n",
        f"1/3 runs finished {{'success': 1, 'running': 2}} running\n  2026-11-18 success\n"
        f"  2026-11-19 running: train running\n{waiting}\n",
    )
    script = fake_airflow_checkout(tmp_path, [], progress=polls)
    result = run_fake_backfill(script, POLL_SECONDS="0")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines.count(waiting) == 1 and lines.count("  2026-11-19 running: train running") == 1  # said once
    assert lines.index("  2026-11-18 running: extract running") < lines.index("  2026-11-18 success")
    assert lines[-2].endswith("keiko_ctr backfill 2026-11-18..2026-11-20: 3/3 runs finished {'success': 3} done")
