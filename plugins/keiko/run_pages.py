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
from fastapi.exception_handlers import http_exception_handler
from fastapi.responses import HTMLResponse, RedirectResponse

from keiko.config import settings
from keiko.contract import MONITORING_PAGE, REPORT, ModelLayout, RunLayout
from keiko.errors import MissingDataError
from keiko.modeldef import MODEL_NAME
from keiko.storage import open_store

app = FastAPI(title="keiko run pages", description="one page per model run: gates, metrics, lineage, deploy")


@app.exception_handler(HTTPException)
async def _log_in_first(request: Request, exc: HTTPException) -> Response:
    """A browser that is not logged in (an alert's link opened in a fresh window) goes to Airflow's login and
    comes back; an API client keeps the plain 401."""
    if exc.status_code == 401 and "text/html" in request.headers.get("accept", ""):
        from airflow.api_fastapi.app import get_auth_manager

        return RedirectResponse(get_auth_manager().get_url_login(next_url=str(request.url)), status_code=303)
    return await http_exception_handler(request, exc)


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
        if path == REPORT:  # no step has run (wait_for_data is waiting or failed, a param was refused): say so
            from keiko.report.page import run_page

            return HTMLResponse(run_page(store, model, ds, note=airflow_says(model, ds)))
        raise HTTPException(404, f"{path} is not in {model} {ds}'s run") from None
    media_type = mimetypes.guess_type(path)[0] or "application/octet-stream"
    return Response(data, media_type=media_type)


def airflow_says(model: str, ds: str) -> str:
    """What Airflow's database says of the latest run of keiko_<model> for `ds`, for a page no step wrote yet."""
    dag_id = f"keiko_{model}"
    try:
        latest = _latest_run(dag_id, dt.date.fromisoformat(ds))
    except Exception as exc:  # the page is for reading: it says what it could not learn
        return f"Airflow's database could not be read ({type(exc).__name__}: {exc})"
    if latest is None:
        return f"Airflow has no run of {dag_id} for {ds}"
    run_id, run_state, states = latest
    failed = sorted(task for task, state in states.items() if state == "failed")
    from airflow.utils.state import State

    going = [f"{task} ({state})" for task, state in states.items() if state in State.unfinished]
    where = f"failed at {failed[0]}" if failed else (f"at {', '.join(going)}" if going else "not started")
    return f"Airflow: run {run_id} is {run_state}, {where}, before any keiko step recorded; its task log says why"


def _latest_run(dag_id: str, day: dt.date) -> tuple[str, str, dict[str, str]] | None:
    """(run id, state, each task's state) of the DAG's latest run with a logical date on `day`."""
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from sqlalchemy import select

    start = dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC)
    with create_session() as session:
        run = session.scalars(
            select(DagRun)
            .where(DagRun.dag_id == dag_id, DagRun.logical_date >= start, DagRun.logical_date < start + dt.timedelta(1))
            .order_by(DagRun.run_after.desc())
            .limit(1)
        ).one_or_none()
        if run is None:
            return None
        states = {ti.task_id: str(ti.state) for ti in run.get_task_instances(session=session) if ti.state}
        return run.run_id, str(run.state), states
