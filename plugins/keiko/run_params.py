"""A run's parameters: what a manual trigger may change, and how the stage process reads them back.

One JSON Schema per parameter serves both sides: the DAG turns each into an Airflow `Param` (the
trigger form, validated by Airflow before the run is created), and every stage validates the same
values again from KEIKO_RUN_PARAMS, because `keiko stage ...` can also be run by hand.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from keiko.config import DEPLOY_MODES
from keiko.errors import KeikoError
from keiko.modeldef import MAX_WINDOW_DAYS, MIN_WINDOW_DAYS, ModelConfig

RUN_PARAMS_ENV = "KEIKO_RUN_PARAMS"
RUN_SECTION = "Run"
MAX_REASON_CHARS = 500


@dataclass(frozen=True)
class ParamSpec:
    default: Any
    schema: dict[str, Any]  # JSON Schema of the value
    description: str
    section: str


def param_specs(config: ModelConfig) -> dict[str, ParamSpec]:
    """Every parameter of a model's runs, in trigger-form order: the run's, then the algorithm's overrides."""
    specs = {
        "deploy": ParamSpec(
            "auto",
            {"type": "string", "enum": list(DEPLOY_MODES)},
            "auto: deploy a blessed model unless it is history (a backfill, or older data than production's); "
            "skip: never deploy this run; force: deploy even history (still needs the blessing)",
            RUN_SECTION,
        ),
        "deploy_strategy": ParamSpec(
            config.deploy.strategy,
            {"type": "string", "enum": config.deploy.strategies},
            "rolling: every replica moves to the new version; canary: a share of the users first, in steps judged "
            "on online signals, reverted on a breach; ab: an experiment with a report "
            f"(model.yaml deploy.strategy: {config.deploy.strategy})",
            RUN_SECTION,
        ),
        "reason": ParamSpec(
            "",
            # null too: the trigger form marks a param required unless its type allows null, and an emptied text
            # field arrives as null. It is stored as "".
            {"type": ["null", "string"], "maxLength": MAX_REASON_CHARS},
            "why this run was started (e.g. 'retrain after the 11-20 logging fix'); stored with the registry entry",
            RUN_SECTION,
        ),
        "window_days": ParamSpec(
            config.window_days,
            {"type": "integer", "minimum": MIN_WINDOW_DAYS, "maximum": MAX_WINDOW_DAYS},
            f"days of data ending with the run's day: train, then one valid day, one test day "
            f"(model.yaml: {config.window_days})",
            RUN_SECTION,
        ),
    }
    algorithm = config.algorithm
    for name, override in algorithm.overridable.items():
        specs[name] = ParamSpec(
            algorithm.params[name],
            override.schema(),
            f"{override.description or name} (model.yaml: {algorithm.params[name]!r})",
            f"Algorithm: {algorithm.name}",
        )
    return specs


@dataclass(frozen=True)
class RunParams:
    """The values a run was started with; `algorithm` holds only the overridable parameters."""

    deploy: str = "auto"
    deploy_strategy: str = "rolling"
    reason: str = ""
    window_days: int | None = None
    algorithm: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def parse(cls, values: dict[str, Any], config: ModelConfig) -> RunParams:
        """Validate `values` (a run's params; missing ones take their defaults) against the model's specs."""
        import jsonschema  # an Airflow dependency; what Param itself validates with

        specs = param_specs(config)
        unknown = sorted(set(values) - set(specs))
        if unknown:
            raise KeikoError(f"unknown run parameter {', '.join(unknown)}; known: {', '.join(specs)}")
        checked = {name: values.get(name, spec.default) for name, spec in specs.items()}
        for name, value in checked.items():
            try:
                jsonschema.validate(value, specs[name].schema)
            except jsonschema.ValidationError as exc:
                raise KeikoError(f"run parameter {name}={value!r}: {exc.message}") from None
        return cls(
            deploy=checked.pop("deploy"),
            deploy_strategy=checked.pop("deploy_strategy"),
            reason=checked.pop("reason") or "",
            window_days=checked.pop("window_days"),
            algorithm=checked,
        )

    @classmethod
    def from_environment(cls, config: ModelConfig) -> RunParams:
        """The params the operator passed in KEIKO_RUN_PARAMS (JSON); defaults when unset (a run by hand)."""
        text = os.environ.get(RUN_PARAMS_ENV) or "{}"
        try:
            values = json.loads(text)
        except json.JSONDecodeError as exc:
            raise KeikoError(f"{RUN_PARAMS_ENV} is not JSON ({exc}): {text[:80]!r}") from None
        if not isinstance(values, dict):
            raise KeikoError(f"{RUN_PARAMS_ENV} must be a JSON object, got {text[:80]!r}")
        return cls.parse(values, config)


def refuse_invalid(model: str, params: Mapping[str, Any]) -> None:
    """Fail a task at once, without retries, when the run's params are not valid for `model`.

    Airflow validates every declared param, but lets a conf key that is no param through (a typo such
    as `window_day`): the task would otherwise fail the same way on every retry.
    """
    from airflow.sdk.exceptions import AirflowFailException

    from keiko.modeldef import load_model

    try:
        RunParams.parse(dict(params), load_model(model).config)
    except KeikoError as exc:
        raise AirflowFailException(f"{exc}: fix the run's conf and trigger a new run") from None
