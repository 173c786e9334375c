"""User mistakes print one line and exit non-zero; never a traceback."""

import datetime as dt
import json
import os
import subprocess
import sys

import pytest

from conftest import DS, END_DATE, ROWS_PER_DAY
from keiko.cli import main
from keiko.modeldef import load_model
from keiko.process import EXIT_USER_ERROR, RESULT_FILE_ENV
from keiko.synth import daily_rows


def keiko(*args, env=None):
    return subprocess.run([sys.executable, "-m", "keiko", *args], capture_output=True, text=True, env=env)


def keiko_watching_teardown(*args, env=None):
    """`keiko ...` through its entry point, with an exit handler that prints when the interpreter tears down."""
    code = (
        "import atexit, sys; atexit.register(print, 'teardown ran'); "
        f"sys.argv = ['keiko', *{list(args)!r}]; from keiko.cli import entry; entry()"
    )
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["stage", "extract", "--model", "nope", "--ds", DS], "unknown model 'nope'"),
        (["stage", "extract", "--model", "ctr", "--ds", "2026-13-01"], "not a date (YYYY-MM-DD): '2026-13-01'"),
        (["stage", "extract", "--model", "ctr", "--ds", "2027-01-10"], "missing warehouse partitions"),
        (["synth", "--end-date", DS, "--days", "0", "--rows-per-day", "10"], "expected a positive integer"),
        (["models", "show", "ctr", "42"], "ctr has no version 42"),
        (["synth", "--end-date", DS, "--days", "1", "--rows-per-day", "10", "--inject", "gremlins"], "unknown fault"),
        (
            ["synth", "--end-date", DS, "--days", "1", "--rows-per-day", "10", "--inject", "drift:2026-11-01"],
            "2026-11-01 is outside the days written (2026-11-21..2026-11-21)",
        ),
    ],
)
def test_user_errors_are_one_clear_line(args, message, keiko_home):
    result = keiko(*args)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_models_list_and_show(run_home, capsys):
    assert main(["models", "list", "ctr", "--json"]) == 0
    versions = json.loads(capsys.readouterr().out)
    assert [v["version"] for v in versions] == [1]
    assert main(["models", "show", "ctr", "1", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    window_days = load_model("ctr").config.window_days
    assert shown["window_start"] == str(END_DATE - dt.timedelta(days=window_days - 1)) and shown["window_end"] == DS
    assert shown["metrics"]["test"]["rows"] == daily_rows(END_DATE, ROWS_PER_DAY, seed=7)
    assert main(["models", "list", "ctr"]) == 0
    assert "registered" in capsys.readouterr().out


def test_stage_prints_a_machine_readable_result_last_and_skips_the_teardown(run_home, tmp_path):
    result_file = tmp_path / "xcom" / "return.json"
    result_file.parent.mkdir()
    env = {**os.environ, RESULT_FILE_ENV: str(result_file)}
    result = keiko_watching_teardown("stage", "register", "--model", "ctr", "--ds", DS, env=env)
    assert result.returncode == 0, result.stderr
    last = result.stdout.strip().splitlines()[-1]
    assert last.startswith("keiko-result: ")  # flushed before os._exit, and nothing after it
    assert json.loads(last.removeprefix("keiko-result: "))["version"] == 1
    assert result_file.read_text() == last.removeprefix("keiko-result: ")
    assert "teardown ran" not in result.stdout


def test_a_step_that_fails_keeps_its_exit_code_and_message_without_the_teardown(keiko_home):
    result = keiko_watching_teardown("stage", "extract", "--model", "nope", "--ds", DS)
    assert result.returncode == EXIT_USER_ERROR
    assert result.stderr.startswith("keiko: error: unknown model 'nope'")
    assert "teardown ran" not in result.stdout


def test_other_commands_exit_through_the_interpreter(keiko_home):
    result = keiko_watching_teardown("models", "list", "nope")
    assert result.returncode == EXIT_USER_ERROR
    assert result.stdout.strip() == "teardown ran"


@pytest.fixture
def started(monkeypatch):
    """What `keiko serve` would have started, recorded instead of run: ("uvicorn", host), ("replicas", n) and
    ("grpc", the gRPC port the app was made with)."""
    import uvicorn

    import keiko.cli
    import keiko.serving.app

    calls = []
    monkeypatch.setattr(uvicorn, "run", lambda _app, *, host, **_kw: calls.append(("uvicorn", host)))
    monkeypatch.setattr(keiko.cli, "_serve_replicas", lambda _a, _port, _grpc, n: calls.append(("replicas", n)) or 0)
    monkeypatch.setattr(keiko.serving.app, "create_app", lambda models, **kw: calls.append(("grpc", kw["grpc_port"])))
    return calls


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.1.2.3"])
@pytest.mark.parametrize("replicas", [[], ["--replicas", "1"]], ids=["default replicas", "one replica"])
def test_serve_beyond_loopback_without_an_admin_token_is_refused(
    host, replicas, keiko_home, monkeypatch, started, capsys
):
    monkeypatch.delenv("KEIKO_ADMIN_TOKEN", raising=False)
    assert main(["serve", "--model", "ctr", "--host", host, *replicas]) == EXIT_USER_ERROR
    captured = capsys.readouterr()
    assert started == []  # refused before any server or replica started
    assert captured.err.startswith("keiko: error:") and len(captured.err.strip().splitlines()) == 1
    assert "KEIKO_ADMIN_TOKEN" in captured.err and host in captured.err
    assert "serving ctr" not in captured.out


def test_serve_beyond_loopback_with_a_token_and_on_loopback_without_one_starts(keiko_home, monkeypatch, started):
    monkeypatch.setenv("KEIKO_ADMIN_TOKEN", "s3cret")
    assert main(["serve", "--model", "ctr", "--host", "0.0.0.0", "--replicas", "1"]) == 0
    monkeypatch.delenv("KEIKO_ADMIN_TOKEN")
    assert main(["serve", "--model", "ctr", "--replicas", "1"]) == 0
    assert main(["serve", "--model", "ctr", "--host", "localhost"]) == 0
    assert [call for call in started if call[0] != "grpc"] == [
        ("uvicorn", "0.0.0.0"), ("uvicorn", "127.0.0.1"), ("replicas", 2)
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("flags", "grpc_port"),
    [
        ([], 8621),  # serving.grpc_port
        (["--port", "9000"], 9020),  # moved with --port, as far from it as in model.yaml
        (["--port", "9000", "--grpc-port", "9500"], 9500),
        (["--no-grpc"], None),
    ],
)
def test_serve_puts_grpc_where_the_flags_say(flags, grpc_port, keiko_home, started):
    assert main(["serve", "--model", "ctr", "--replicas", "1", *flags]) == 0
    assert ("grpc", grpc_port) in started
