"""The run pages app, without the API server: which files of a run it serves, and what it refuses."""

import pytest
from fastapi.testclient import TestClient

from conftest import DS
from keiko.config import settings
from keiko.run_pages import app, authorized
from keiko.storage import open_store


@pytest.fixture
def client(keiko_home):
    store = open_store(settings())
    store.write_bytes(store.uri("ctr", DS, "report.html"), b"<html>run page</html>")
    store.write_bytes(store.uri("ctr", DS, "plots/roc.png"), b"\x89PNG fake")
    app.dependency_overrides[authorized] = lambda: None  # Airflow's login is the API server's, tested in e2e
    yield TestClient(app)
    app.dependency_overrides.clear()


def test_the_run_directory_serves_its_page_and_the_files_it_links(client):
    page = client.get(f"/runs/ctr/{DS}/")
    assert page.status_code == 200 and page.text == "<html>run page</html>"
    assert page.headers["content-type"].startswith("text/html")
    plot = client.get(f"/runs/ctr/{DS}/plots/roc.png")
    assert plot.status_code == 200 and plot.headers["content-type"] == "image/png"


@pytest.mark.parametrize(
    "path, detail",
    [
        (f"/runs/ctr/{DS}/plots/drift.png", f"plots/drift.png is not in ctr {DS}'s run"),
        ("/runs/ctr/yesterday/", "'yesterday' is not a day (YYYY-MM-DD)"),
        (f"/runs/Ctr!/{DS}/", "no model 'Ctr!'"),
        (f"/runs/ctr/{DS}/plots/..%2F..%2Fregistry.db", "no file"),
    ],
)
def test_anything_else_is_a_404_that_says_why(client, path, detail):
    response = client.get(path)
    assert response.status_code == 404 and detail in response.json()["detail"]


def test_a_day_no_step_has_recorded_yet_has_a_page_saying_so_and_what_airflow_says(client, monkeypatch):
    """An alert for a run that failed before extract (wait_for_data timed out, a refused param) links here."""
    said = "Airflow: run manual__x is failed, failed at wait_for_data, before any keiko step recorded"
    monkeypatch.setattr(
        "keiko.run_pages.airflow_says", lambda model, ds: said if (model, ds) == ("ctr", "2026-11-20") else ""
    )
    page = client.get("/runs/ctr/2026-11-20/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "no step of this run has been recorded yet" in page.text and said in page.text


def test_without_a_database_the_page_says_what_it_could_not_learn(keiko_home):
    from keiko.run_pages import airflow_says

    assert airflow_says("ctr", "2026-11-20").startswith("Airflow's database could not be read (")


def test_a_browser_that_is_not_logged_in_is_sent_to_the_login_and_back(keiko_home, monkeypatch):
    """Only a browser (it asks for HTML); API clients keep the 401 (tests/e2e/test_airflow_operations.py)."""
    from airflow.api_fastapi.auth.managers.simple.simple_auth_manager import SimpleAuthManager

    monkeypatch.setattr("airflow.api_fastapi.app.get_auth_manager", SimpleAuthManager)  # the API server's
    page = f"/runs/ctr/{DS}/"
    browser = TestClient(app).get(page, headers={"accept": "text/html,*/*;q=0.8"}, follow_redirects=False)
    assert browser.status_code == 303
    assert browser.headers["location"] == f"/auth/login?next=http%3A%2F%2Ftestserver%2Fruns%2Fctr%2F{DS}%2F"
    assert TestClient(app).get(page).status_code == 401


@pytest.fixture
def monitor_client(keiko_home):
    from keiko.contract import ModelLayout
    from keiko.run_pages import authorized_monitor

    store = open_store(settings())
    layout = ModelLayout(store, "ctr")
    store.write_bytes(layout.monitoring_page, b"<html>monitoring page</html>")
    store.write_bytes(layout.monitoring_plot("last_30_days"), b"\x89PNG fake")
    store.write_bytes(store.uri("ctr", f"monitor/{DS}", "online.parquet"), b"PAR1")  # a monitor run's data
    app.dependency_overrides[authorized_monitor] = lambda: None
    yield TestClient(app)
    app.dependency_overrides.clear()


def test_the_monitoring_page_serves_itself_and_its_plots_and_nothing_else_of_the_model(monitor_client):
    page = monitor_client.get("/monitor/ctr/")
    assert page.status_code == 200 and page.text == "<html>monitoring page</html>"
    plot = monitor_client.get("/monitor/ctr/plots/last_30_days.png")
    assert plot.status_code == 200 and plot.headers["content-type"] == "image/png"
    for path, detail in [
        (f"/monitor/ctr/{DS}/online.parquet", "no file"),
        ("/monitor/ctr/plots/last_90_days.png", "no plots/last_90_days.png"),
        ("/monitor/cvr/", "no monitoring page for cvr yet"),
    ]:
        response = monitor_client.get(path)
        assert response.status_code == 404 and detail in response.json()["detail"], path
