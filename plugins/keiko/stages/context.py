"""What a stage runs against: the model, the run's day, and the resources (store, registry, warehouse)."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import time
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any

import keiko
from keiko.config import DEPLOY_MODES, Settings, settings
from keiko.errors import KeikoError
from keiko.modeldef import ModelDefinition, load_model
from keiko.storage import ArtifactStore, open_store
from keiko.warehouse import data_window

if TYPE_CHECKING:  # imported where used: not every stage needs SQLAlchemy or DuckDB
    from keiko.registry import Registry
    from keiko.warehouse import Warehouse


@dataclass
class StageContext:
    model: ModelDefinition
    ds: dt.date
    settings: Settings
    run_id: str = ""
    run_type: str = "manual"  # Airflow's dag_run.run_type: scheduled, manual, backfill, ...
    deploy_mode: str = "auto"  # the trigger param `deploy`: auto, skip or force
    started: float = field(default_factory=time.monotonic)

    @classmethod
    def create(cls, model: str, ds: dt.date, run_id: str = "") -> StageContext:
        """The run's identity comes from the operator's environment (KEIKO_RUN_ID, KEIKO_RUN_TYPE, KEIKO_DEPLOY)."""
        deploy_mode = os.environ.get("KEIKO_DEPLOY") or "auto"
        if deploy_mode not in DEPLOY_MODES:
            raise KeikoError(f"KEIKO_DEPLOY={deploy_mode!r}: expected one of {', '.join(DEPLOY_MODES)}")
        return cls(
            load_model(model),
            ds,
            settings(),
            run_id or os.environ.get("KEIKO_RUN_ID", ""),
            run_type=os.environ.get("KEIKO_RUN_TYPE") or "manual",
            deploy_mode=deploy_mode,
        )

    @cached_property
    def store(self) -> ArtifactStore:
        return open_store(self.settings)

    @cached_property
    def registry(self) -> Registry:
        from keiko.registry import open_registry

        return open_registry(self.settings.registry_url)

    @cached_property
    def warehouse(self) -> Warehouse:
        from keiko.warehouse import open_warehouse

        return open_warehouse(self.settings)

    @property
    def window(self) -> tuple[dt.date, dt.date]:
        return data_window(self.ds, self.model.config.window_days)

    def uri(self, name: str) -> str:
        return self.store.uri(self.model.name, self.ds.isoformat(), name)

    def stage_result(self, stage: str) -> dict[str, Any]:
        return self.store.read_json(self.uri(f"stages/{stage}.json"))

    def log(self, message: str) -> None:
        elapsed = time.monotonic() - self.started
        print(f"[{elapsed:7.1f}s] {message}", flush=True)


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
