"""The run pages on Airflow's API server: `/keiko/runs/<model>/<ds>/` serves that run's page
(keiko.contract.REPORT) and the files it links (plots, Data Docs) from the artifact store, for the "Run page"
task button; `/keiko/monitor/<model>/` the model's monitoring page and its plots (a monitor task's button).

Mounted by plugins/keiko/airflow_plugin.py. Access is Airflow's: the caller must be allowed to read the runs of
`keiko_<model>` (the UI's session cookie or an API token), so the pages need no auth of their own.
"""

from __future__ import annotations

import datetime as dt
import mimetypes

from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity
from airflow.api_fastapi.core_api.security import GetUserDep, requires_access_dag
from fastapi import Depends, FastAPI, HTTPException, Request, Response

from keiko.config import settings
from keiko.contract import MONITORING_PAGE, REPORT, ModelLayout, RunLayout
from keiko.errors import MissingDataError
from keiko.modeldef import MODEL_NAME
from keiko.storage import open_store

app = FastAPI(title="keiko run pages", description="one page per model run: gates, metrics, lineage, deploy")


def authorized(request: Request, model: str, user: GetUserDep) -> None:
    """Airflow's own check: may this user read the runs of keiko_<model>?"""
    requires_access_dag("GET", DagAccessEntity.RUN, param_dag_id=f"keiko_{model}")(request, user)


def authorized_monitor(request: Request, model: str, user: GetUserDep) -> None:
    requires_access_dag("GET", DagAccessEntity.RUN, param_dag_id=f"keiko_monitor_{model}")(request, user)


@app.get("/monitor/{model}/{path:path}", dependencies=[Depends(authorized_monitor)])
def monitoring_file(model: str, path: str) -> Response:
    if not MODEL_NAME.match(model):
        raise HTTPException(404, f"no model {model!r}")
    page = MONITORING_PAGE.rsplit("/", 1)[-1]
    path = path or page
    if path != page and not (path.startswith("plots/") and path.count("/") == 1 and path.endswith(".png")):
        raise HTTPException(404, f"no file {path!r} on a monitoring page")
    store = open_store(settings())
    uri = ModelLayout(store, model).monitoring_page.rsplit("/", 1)[0] + "/" + path
    try:
        data = store.read_bytes(uri)
    except MissingDataError:
        raise HTTPException(404, f"no monitoring page for {model} yet" if path == page else f"no {path}") from None
    return Response(data, media_type=mimetypes.guess_type(path)[0] or "application/octet-stream")


@app.get("/runs/{model}/{ds}/{path:path}", dependencies=[Depends(authorized)])
def run_file(model: str, ds: str, path: str) -> Response:
    if not MODEL_NAME.match(model):
        raise HTTPException(404, f"no model {model!r}")
    try:
        dt.date.fromisoformat(ds)
    except ValueError:
        raise HTTPException(404, f"{ds!r} is not a day (YYYY-MM-DD)") from None
    path = path or REPORT
    if any(part in ("", ".", "..") for part in path.split("/")):
        raise HTTPException(404, f"no file {path!r} in a run")
    store = open_store(settings())
    try:
        data = store.read_bytes(RunLayout(store, model, ds).uri(path))
    except MissingDataError:
        detail = f"no run page for {model} {ds} yet" if path == REPORT else f"{path} is not in {model} {ds}'s run"
        raise HTTPException(404, detail) from None
    media_type = mimetypes.guess_type(path)[0] or "application/octet-stream"
    return Response(data, media_type=media_type)
