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
        ("/runs/ctr/2026-11-20/", "no run page for ctr 2026-11-20 yet"),
        (f"/runs/ctr/{DS}/plots/drift.png", f"plots/drift.png is not in ctr {DS}'s run"),
        ("/runs/ctr/yesterday/", "'yesterday' is not a day (YYYY-MM-DD)"),
        (f"/runs/Ctr!/{DS}/", "no model 'Ctr!'"),
        (f"/runs/ctr/{DS}/plots/..%2F..%2Fregistry.db", "no file"),
    ],
)
def test_anything_else_is_a_404_that_says_why(client, path, detail):
    response = client.get(path)
    assert response.status_code == 404 and detail in response.json()["detail"]


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
