"""What a step runs against: the model, the run's day and identity, its files (RunLayout) and its resources."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import time
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any

import keiko
from keiko.config import Settings, settings
from keiko.contract import R, RunLayout
from keiko.modeldef import ModelDefinition, load_model
from keiko.pipeline import MODEL_DAG
from keiko.process import RUN_ID_ENV, RUN_TYPE_ENV
from keiko.resources import Resources
from keiko.run_params import RunParams
from keiko.storage import ArtifactStore
from keiko.warehouse import data_window

if TYPE_CHECKING:
    from keiko.registry import Registry
    from keiko.warehouse import Warehouse


@dataclass
class StageContext:
    model: ModelDefinition
    ds: dt.date
    resources: Resources
    run_id: str = ""
    run_type: str = "manual"  # Airflow's dag_run.run_type: scheduled, manual, backfill, ...
    params: RunParams = field(default_factory=RunParams)  # the trigger's: deploy, reason, window, overrides
    started: float = field(default_factory=time.monotonic)
    dag: str = MODEL_DAG  # MONITOR_DAG: a monitor step, judging day `ds` (its files: RunLayout's dag)

    @classmethod
    def create(cls, model: str, ds: dt.date, run_id: str = "", dag: str = MODEL_DAG) -> StageContext:
        """The run's identity comes from the operator's environment (KEIKO_RUN_ID, KEIKO_RUN_TYPE,
        KEIKO_RUN_PARAMS); `model` is the definition as the run's params changed it."""
        definition = load_model(model)
        params = RunParams.from_environment(definition.config)
        return cls(
            definition.with_run_params(window_days=params.window_days, algorithm_params=params.algorithm),
            ds,
            Resources(),
            run_id or os.environ.get(RUN_ID_ENV, ""),
            run_type=_run_type(os.environ.get(RUN_TYPE_ENV) or "manual"),
            params=params,
            dag=dag,
        )

    @property
    def deploy_mode(self) -> str:
        return self.params.deploy

    @property
    def trigger(self) -> dict[str, Any]:
        """What the registry keeps of how this run was asked for."""
        return {"run_type": self.run_type, **self.params.to_dict()}

    @property
    def settings(self) -> Settings:
        return self.resources.settings

    @property
    def store(self) -> ArtifactStore:
        return self.resources.store

    @property
    def registry(self) -> Registry:
        return self.resources.registry

    @property
    def warehouse(self) -> Warehouse:
        return self.resources.warehouse

    @cached_property
    def layout(self) -> RunLayout:
        return RunLayout(self.store, self.model.name, self.ds.isoformat(), self.dag)

    def result(self, kind: type[R]) -> R:
        """The typed result an earlier step of this run wrote."""
        return self.layout.read_result(kind)

    @property
    def window(self) -> tuple[dt.date, dt.date]:
        return data_window(self.ds, self.model.config.window_days)

    def log(self, message: str) -> None:
        elapsed = time.monotonic() - self.started
        print(f"[{elapsed:7.1f}s] {message}", flush=True)


def _run_type(rendered: str) -> str:
    """A task renders `{{ dag_run.run_type }}` as the SDK's enum member ("DagRunType.BACKFILL"): its value."""
    return rendered.rsplit(".", 1)[-1].lower()


def code_version() -> str:
    """Package version plus the checkout's commit when there is one (lineage, not identity)."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"],
            cwd=settings().project_dir,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = "nogit"
    return f"{keiko.__version__}+{commit}"


def peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB
