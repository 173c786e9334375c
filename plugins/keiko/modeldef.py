"""A model's definition: include/models/<name>/model.yaml, validated, plus its feature module.

Parsed when the DAG folder is parsed, so this module stays light: pydantic and yaml only.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import importlib.util
import math
import re
import sys
from functools import cached_property
from pathlib import Path
from types import ModuleType
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PositiveInt, ValidationError, field_validator, model_validator

from keiko.config import settings
from keiko.errors import KeikoError, ModelConfigError
from keiko.pipeline import STEPS

MODEL_NAME = re.compile(r"^[a-z][a-z0-9_]{0,40}$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


MIN_WINDOW_DAYS, MAX_WINDOW_DAYS = 3, 90
# Reserved for the run's own parameters (keiko.run_params) in the trigger form.
RUN_PARAM_NAMES = ("deploy", "reason", "window_days")


class Override(_Strict):
    """An algorithm parameter a manual trigger may change, with the values allowed (JSON Schema words)."""

    type: Literal["integer", "number", "string", "boolean"]
    minimum: int | float | None = None
    maximum: int | float | None = None
    exclusiveMinimum: int | float | None = None  # JSON Schema spelling, as in model.yaml
    exclusiveMaximum: int | float | None = None
    enum: list[str | int | float] | None = None
    description: str = ""

    def schema(self) -> dict[str, Any]:
        return self.model_dump(exclude_none=True, exclude={"description"})


class Algorithm(_Strict):
    name: str
    params: dict[str, Any] = Field(default_factory=dict)
    overridable: dict[str, Override] = Field(
        default_factory=dict, description="params a manual trigger may change: name -> allowed values"
    )

    @field_validator("name")
    @classmethod
    def _known(cls, value: str) -> str:
        from keiko.algorithms import ALGORITHMS  # names only: no training library is imported

        if value not in ALGORITHMS:
            raise ValueError(f"unknown algorithm {value!r}; known: {', '.join(ALGORITHMS)}")
        return value

    @model_validator(mode="after")
    def _overridable_params(self) -> Algorithm:
        import jsonschema  # an Airflow dependency, as Param validates with it

        for name, override in self.overridable.items():
            if name in RUN_PARAM_NAMES:
                raise ValueError(f"overridable.{name}: the name is taken by the run parameter {name!r}")
            if name not in self.params:
                raise ValueError(f"overridable.{name}: not one of params ({', '.join(self.params) or 'none'})")
            try:
                jsonschema.validate(self.params[name], override.schema())
            except jsonschema.ValidationError as exc:
                raise ValueError(f"overridable.{name}: params.{name} itself is not allowed: {exc.message}") from None
        return self


class Thresholds(_Strict):
    min_auc: float = Field(gt=0.5, le=1.0)
    max_logloss: float = Field(gt=0.0)
    calibration_tolerance: float = Field(gt=0.0, lt=1.0, description="|sum pred / sum true - 1| allowed")
    max_regression: float = Field(ge=0.0, description="relative test logloss increase over production still deployed")


# A Kubernetes quantity ("500m", "2", "1.5Gi"); checked here so a typo fails at parse, naming the field.
QUANTITY = re.compile(r"^[0-9]+(\.[0-9]+)?(m|k|M|G|T|Ki|Mi|Gi|Ti)?$")


class Toleration(_Strict):
    key: str | None = None
    operator: Literal["Equal", "Exists"] = "Equal"
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    toleration_seconds: int | None = None


class PodSettings(_Strict):
    """What a stage pod asks of the cluster (KEIKO_STAGE_RUNNER=kubernetes)."""

    requests: dict[Literal["cpu", "memory", "ephemeral-storage"], str] = Field(default_factory=dict)
    limits: dict[Literal["cpu", "memory", "ephemeral-storage"], str] = Field(default_factory=dict)
    node_selector: dict[str, str] = Field(default_factory=dict)
    tolerations: list[Toleration] = Field(default_factory=list)

    @field_validator("requests", "limits")
    @classmethod
    def _quantities(cls, value: dict[str, str]) -> dict[str, str]:
        for resource, quantity in value.items():
            if not QUANTITY.match(str(quantity)):
                raise ValueError(f"{resource}: {quantity!r} is not a Kubernetes quantity (e.g. 500m, 2, 4Gi)")
        return value

    def over(self, base: PodSettings) -> PodSettings:
        """These settings on top of `base`: resources merge per resource, the rest replaces when set."""
        return PodSettings(
            requests={**base.requests, **self.requests},
            limits={**base.limits, **self.limits},
            node_selector=self.node_selector if "node_selector" in self.model_fields_set else base.node_selector,
            tolerations=self.tolerations if "tolerations" in self.model_fields_set else base.tolerations,
        )


# A warehouse table or column name keiko may put in SQL: one that DuckDB and Athena both read unquoted
# (Glue's names are lowercase, at most 255 characters). keiko quotes them all the same.
IDENTIFIER = re.compile(r"[a-z][a-z0-9_]{0,254}")


def _identifier(value: str) -> str:
    if not IDENTIFIER.fullmatch(value):  # fullmatch: "$" would accept a trailing newline
        raise ValueError(f"{value!r} is not a table or column name (lowercase letters, digits and _, from a letter)")
    return value


class PredictionLog(_Strict):
    """How a model server writes the rows it answered (keiko.serving.prediction_log). The defaults: a file every
    5 s, or sooner at 50,000 rows (~9 s of a replica's full load here); at most 200,000 rows held unwritten
    (~920 bytes each as the request's Python objects: ~180 MB) while the store is slow, beyond which rows are
    dropped and counted rather than held or waited for."""

    enabled: bool = True
    flush_seconds: float = Field(default=5.0, gt=0, le=300, description="longest a row waits to be written")
    flush_rows: int = Field(default=50_000, ge=1, description="rows that make a file without waiting")
    max_buffered_rows: int = Field(
        default=200_000, ge=1, description="rows held unwritten (the buffer and a file being written); more drop"
    )

    @model_validator(mode="after")
    def _buffer_holds_a_file(self) -> PredictionLog:
        if self.max_buffered_rows < self.flush_rows:
            raise ValueError(f"max_buffered_rows {self.max_buffered_rows} < flush_rows {self.flush_rows}")
        return self


class BatchServing(_Strict):
    """serving.mode batch: after the blessing, batch_score scores every key of the run's key set (keys_sql) into the
    batch store (keiko.batch_store); deploy moves the store's pointer to the new version; the model servers answer
    from the store."""

    key: str = Field(description="the key set's column, the request field looked up, the store's key")
    key_type: Literal["int", "str"] = Field(default="int", description="the request field's type")
    keys_sql: str = Field(default="batch_keys.sql", description="include/sql/<model>/: the key set with its inputs")
    chunk_rows: int = Field(default=10_000, ge=1, le=1_000_000, description="keys scored and written at a time")
    ttl_hours: float = Field(default=72, gt=0, description="a batch's keys expire this long after it was written")
    fallback: Literal["prior", "online"] = Field(
        default="prior",
        description="the answer for a missing or expired key: prior, training's label rate; online, the row scored "
        "by the batch's version from the feature inputs the request sends with the key (the prior without them)",
    )
    min_coverage: float = Field(default=0.999, gt=0, le=1, description="gate_batch: keys stored / keys in the set")
    max_score_kl: float = Field(default=0.05, gt=0, description="gate_batch: the scores' KL from the serving batch's")
    p95_lookup_ms: float = Field(default=50, gt=0, description="gate_batch: p95 of one-key lookups in the store")
    max_fallback_share: float = Field(
        default=0.05, gt=0, le=1, description="the monitor's gate_volume: answers that fell back / answers, at most"
    )

    _key = field_validator("key")(_identifier)


class Serving(_Strict):
    port: int = Field(ge=1024, le=65535)
    mode: Literal["online", "batch"] = Field(
        default="online", description="online: scored per request; batch: scored by batch_score, served from a store"
    )
    batch: BatchServing | None = None
    grpc_port: int | None = Field(
        default=None, ge=1024, le=65535, description="the inference protocol over gRPC, first replica's; none: off"
    )
    replicas: int = Field(default=1, ge=1)
    p95_latency_ms: float = Field(default=10.0, gt=0, description="gate_serving: p95 of single-row /predict calls")
    skew_tolerance: float = Field(default=1e-6, gt=0, description="gate_serving: |served - offline| per row")
    # Request limits of the model server. A replica is one core: while it parses and scores one request,
    # every other request waits, so the limits bound how long one request can hold it.
    max_body_bytes: int = Field(
        default=1_048_576, ge=1024, description="request body; larger gets 413 before it is read (nginx's default)"
    )
    max_rows: int = Field(default=1000, ge=1, description="rows of one /predict request; more get 413 before parsing")
    max_string_length: int = Field(default=256, ge=1, description="characters of a string field; longer is a 422")
    max_string_length_per_field: dict[str, PositiveInt] = Field(
        default_factory=dict, description="string fields whose limit differs from max_string_length"
    )
    prediction_log: PredictionLog = Field(default_factory=PredictionLog)

    @model_validator(mode="after")
    def _batch_settings(self) -> Serving:
        if (self.mode == "batch") != (self.batch is not None):
            raise ValueError("serving.batch is set exactly when serving.mode is batch")
        return self


class Band(_Strict):
    min: float
    max: float

    @model_validator(mode="after")
    def _ordered(self) -> Band:
        if not self.min <= self.max:
            raise ValueError(f"min {self.min} > max {self.max}")
        return self


class SourceColumn(_Strict):
    """What every row of a source column must hold (gate_raw, per new day's partition)."""

    type: Literal["int", "float", "str", "timestamp"]
    nullable: bool = False
    min: float | None = None
    max: float | None = None
    accepted: list[str | int] | None = Field(default=None, description="the accepted set of values")
    regex: str | None = Field(default=None, description="a pattern every value matches")
    # A column that may legitimately sit on one value (an id, a flag) is left out of the top-value-share check.
    judge_top_share: bool = True

    @property
    def ranged(self) -> bool:
        return self.min is not None or self.max is not None


class Reference(_Strict):
    """A column naming rows of another source table (by the same column there): it must resolve, and this
    event must come after the first of them."""

    column: str
    table: str
    days_before: int = Field(default=1, ge=0, description="the referenced row may sit this many days earlier")
    max_delay_hours: float = Field(gt=0, description="this event's time minus the referenced event's, at most")

    _names = field_validator("column", "table")(_identifier)


class Truth(_Strict):
    """Where the synthetic warehouse keeps each row's true probability: `column` of `table`, keyed by the model's
    row_id, in the partition of the day the row describes (its `dt` minus the model's label_horizon_days)."""

    column: str
    table: str = "truth"

    _names = field_validator("column", "table")(_identifier)  # evaluate puts them in SQL


class SourceTable(_Strict):
    """A warehouse table the extract SQL reads, at its own grain (gate_raw validates each new day of it)."""

    key: list[str] = Field(min_length=1, description="unique per row of a day's partition")
    event_time: str = Field(description="the event's time: inside the partition's day (UTC)")
    max_lateness_hours: float = Field(default=0, ge=0, description="event times may run past the day by this")
    columns: dict[str, SourceColumn] = Field(min_length=1, description="every column the SQL reads, and the checks")
    references: list[Reference] = Field(default_factory=list)

    @field_validator("columns")
    @classmethod
    def _column_names(cls, value: dict[str, SourceColumn]) -> dict[str, SourceColumn]:
        for name in value:
            _identifier(name)
        return value

    @model_validator(mode="after")
    def _declared(self) -> SourceTable:
        undeclared = [c for c in (*self.key, self.event_time) if c not in self.columns]
        undeclared += [r.column for r in self.references if r.column not in self.columns]
        if undeclared:
            raise ValueError(f"key, event_time and references name undeclared columns: {', '.join(undeclared)}")
        return self


class RawGate(_Strict):
    """gate_raw: the source tables' new partitions, the extracted rows, and every day of the window."""

    keys: list[str] = Field(default_factory=lambda: ["impression_id"], description="non-null and unique")
    accepted_values: dict[str, list[str | int]] = Field(default_factory=dict, description="of extracted columns")
    label_rate: Band = Field(description="allowed label rate of every day in the window")
    volume: Band = Field(description="rows of every day / median rows per day of the window and earlier runs")
    hour_profile_max_distance: float = Field(
        gt=0, le=1, description="total variation distance of a day's hour-of-day shares from the other days' median"
    )
    top_share_max_change: float = Field(
        gt=0, le=1, description="a column's most frequent value's share minus the other days' median, at most"
    )
    min_rows_across_days: int = Field(
        default=5000, ge=1, description="a source day with fewer rows is not compared with the other days (noise)"
    )


class FeaturesGate(_Strict):
    """gate_features: drift against production's training profile, and split balance."""

    max_kl_divergence: float = Field(gt=0, description="default KL threshold per input column")
    kl_divergence: dict[str, float] = Field(default_factory=dict, description="per-column override")
    min_rows: int = Field(ge=1, description="below this many test rows, drift is not judged")
    top_values: int = Field(default=50, ge=2, description="categories beyond the top N count as one bucket")
    test_train_label_ratio: Band = Field(description="test label rate / train label rate")


class TrainingGate(_Strict):
    """gate_training: convergence and the resource budget of the artifact."""

    max_artifact_mb: float = Field(gt=0)
    max_load_memory_mb: float = Field(gt=0)
    min_prediction_std: float = Field(gt=0, description="predictions on valid must not be constant")


DAILY_CRON = re.compile(r"^(?P<minute>[0-5]?\d) (?P<hour>1?\d|2[0-3]) \* \* \*$")


class Trend(_Strict):
    """gate_volume's check across the model's last runs (the registry): a slow decline that the volume gate's
    trailing median follows down, caught by the slope of a least-squares line through the last `runs` runs."""

    runs: int = Field(default=10, ge=3, description="the last runs the line is fitted on")
    max_daily_rows_decline: float = Field(gt=0, lt=1, description="training rows' fitted daily fall, at most")
    max_daily_logloss_rise: float = Field(gt=0, lt=1, description="offline test logloss' fitted daily rise, at most")


class Monitor(_Strict):
    """keiko_monitor_<model>: what the served model did on a day, judged once that day's outcomes are in."""

    schedule: str = Field(
        default="0 6 * * *", description="daily cron (UTC): the run after day D judges the last day fully attributed"
    )
    wait_hours: float = Field(default=24, gt=0, description="the sensors wait this long for a partition, then fail")
    min_rows: int = Field(ge=1, description="a version with fewer answered rows that day is not judged")
    max_logloss_gap: float = Field(gt=0, description="online logloss / the version's offline test logloss - 1, at most")
    max_auc_drop: float = Field(gt=0, lt=1, description="offline AUC - online AUC, at most")
    calibration_tolerance: float = Field(gt=0, lt=1, description="|sum of predictions / sum of outcomes - 1|, at most")
    max_kl_divergence: float = Field(gt=0, description="KL of a field's served values from its training profile")
    kl_divergence: dict[str, float] = Field(default_factory=dict, description="per-field override (`score` too)")
    top_values: int = Field(default=50, ge=2, description="categories beyond the top N count as one bucket")
    max_unseen_share: float = Field(gt=0, le=1, description="share of a field's served values training never saw")
    unseen_share: dict[str, float] = Field(default_factory=dict, description="per-field override")
    answered_share: Band = Field(description="the day's impressions with a logged answer / all of them")
    trend: Trend

    @field_validator("schedule")
    @classmethod
    def _daily(cls, value: str) -> str:
        if not DAILY_CRON.match(value):
            raise ValueError(f"{value!r} is not a daily cron at a fixed time (`M H * * *`, UTC)")
        return value

    def lag_days(self, attribution_hours: float) -> int:
        """How many days before its data interval's day a run judges: the run for day ds starts at ds + 1 day +
        the schedule's time, and day D is fully attributed at D + 1 day + attribution_hours."""
        match = DAILY_CRON.match(self.schedule)
        assert match  # the validator's
        starts = int(match["hour"]) + int(match["minute"]) / 60
        return max(0, math.ceil((attribution_hours - starts) / 24))


class RunPolicy(_Strict):
    """The model DAG's runs: how long one waits for its data, and when an unfinished one is late."""

    wait_for_data_hours: float = Field(
        default=6, gt=0, description="wait_for_data waits this long for the window's partitions, then fails"
    )
    deadline_hours: float = Field(
        default=10, gt=0, description="a run still unfinished this long after it was queued alerts the webhook"
    )


class CanaryStep(_Strict):
    """One step of a canary: the canary's share of the users, and what must be seen before it is judged."""

    weight: float = Field(gt=0, lt=1, description="share of the users (by salted hash of the user id) on the canary")
    hold_minutes: float = Field(default=0, ge=0, description="the step lasts at least this long")
    min_requests: int = Field(default=0, ge=0, description="canary requests in the step, at least")
    min_outcomes: int = Field(default=0, ge=0, description="canary rows with their outcome known, at least")


class CanaryAnalysis(_Strict):
    """How a step compares canary with stable on the same period; a check short of its sample holds the step."""

    max_error_rate_increase: float = Field(
        default=0.001, ge=0, lt=1, description="canary's share of 5xx answers minus stable's, at most"
    )
    max_p95_latency_ratio: float = Field(default=2.0, gt=1, description="canary's p95 latency / stable's, at most")
    max_prediction_kl: float = Field(
        default=0.05, gt=0, description="KL divergence of the canary's predictions from stable's, at most"
    )
    max_logloss_increase: float = Field(
        default=0.02, ge=0, description="canary's online logloss / stable's - 1, at most (with the interval above 0)"
    )
    calibration_tolerance: float = Field(
        default=0.15, gt=0, lt=1, description="how much further from 1 the canary's calibration may be than stable's"
    )
    min_positives: int = Field(default=30, ge=1, description="positive outcomes per variant before logloss is judged")
    alpha: float = Field(default=0.05, gt=0, lt=0.5, description="the tests' level: 95% intervals at 0.05")


class Canary(_Strict):
    steps: list[CanaryStep] = Field(min_length=1, description="weights rising; the canary is promoted after the last")
    max_hold_minutes: float = Field(
        gt=0, description="a step still short of data this long fails in one line, stable serving every user"
    )
    check_every_seconds: float = Field(default=60, gt=0, description="between the analyses of a step")
    analysis: CanaryAnalysis = Field(default_factory=CanaryAnalysis)
    approve_thin_margin: bool = Field(
        default=True,
        description="a canary significantly worse online than stable, though within the allowance, is promoted "
        "only by a person (approve_promotion); false: promoted",
    )

    @model_validator(mode="after")
    def _rising(self) -> Canary:
        weights = [step.weight for step in self.steps]
        if weights != sorted(set(weights)):
            raise ValueError(f"canary steps' weights must rise: {weights}")
        for step in self.steps:
            if step.hold_minutes >= self.max_hold_minutes:
                raise ValueError(f"a step holds {step.hold_minutes} min, not less than max_hold_minutes")
        return self


class ABTest(_Strict):
    """A fixed split for a period, decided by online logloss (keiko.rollout.online_stats)."""

    weight: float = Field(default=0.5, gt=0, lt=1, description="share of the users on the new version")
    hold_minutes: float = Field(ge=0, description="the experiment lasts at least this long")
    min_outcomes: int = Field(ge=1, description="rows with their outcome known, per variant, at least")
    max_hold_minutes: float = Field(gt=0, description="still short of data this long: no decision, stable serves")
    check_every_seconds: float = Field(default=60, gt=0)
    min_relative_gain: float = Field(default=0.0, ge=0, description="a smaller logloss gain is `no difference`")
    alpha: float = Field(default=0.05, gt=0, lt=0.5)
    min_positives: int = Field(default=30, ge=1)
    apply: Literal["auto", "approve", "report"] = Field(
        default="approve",
        description="a better new version: auto promotes it; approve asks a person in Airflow (approve_promotion); "
        "report only writes the report, stable serves",
    )


DEPLOY_STRATEGIES = ("rolling", "canary", "ab")


class RolloutPlan(_Strict):
    """What the canary stage runs for a strategy: an A/B experiment is one step, its guards the canary's."""

    steps: list[CanaryStep]
    max_hold_minutes: float
    check_every_seconds: float
    analysis: CanaryAnalysis
    experiment: ABTest | None = None
    approve_thin_margin: bool = True


class Deploy(_Strict):
    strategy: Literal["rolling", "canary", "ab"] = Field(
        default="rolling", description="rolling: every replica at once (one at a time); canary: steps; ab: experiment"
    )
    canary: Canary | None = None
    ab: ABTest | None = None
    approval_hours: float = Field(
        default=24, gt=0, description="approve_promotion waits this long for a person, then keeps stable"
    )

    def plan(self, strategy: str) -> RolloutPlan:
        if strategy == "canary" and self.canary is not None:
            c = self.canary
            return RolloutPlan(
                steps=c.steps, max_hold_minutes=c.max_hold_minutes, check_every_seconds=c.check_every_seconds,
                analysis=c.analysis, approve_thin_margin=c.approve_thin_margin,
            )  # fmt: skip
        if strategy == "ab" and self.ab is not None:
            ab = self.ab
            step = CanaryStep(weight=ab.weight, hold_minutes=ab.hold_minutes, min_outcomes=ab.min_outcomes)
            analysis = CanaryAnalysis(alpha=ab.alpha, min_positives=ab.min_positives)
            return RolloutPlan(
                steps=[step], max_hold_minutes=ab.max_hold_minutes, check_every_seconds=ab.check_every_seconds,
                analysis=analysis, experiment=ab,
            )  # fmt: skip
        raise KeikoError(f"deploy strategy {strategy!r} has no settings in model.yaml (deploy.{strategy})")

    @property
    def strategies(self) -> list[str]:
        """The strategies a run may pick: rolling, and those with settings here."""
        return [name for name in DEPLOY_STRATEGIES if name == "rolling" or getattr(self, name) is not None]

    @model_validator(mode="after")
    def _configured(self) -> Deploy:
        if self.strategy != "rolling" and getattr(self, self.strategy) is None:
            raise ValueError(f"strategy {self.strategy} needs its settings under deploy.{self.strategy}")
        return self


class Gates(_Strict):
    raw: RawGate
    features: FeaturesGate
    training: TrainingGate


class ModelConfig(_Strict):
    owner: str = Field(min_length=1)
    description: str = ""
    schedule: str = Field(min_length=1, description="cron expression, UTC; the run for day D starts after D ends")
    start_date: dt.date
    window_days: int = Field(
        ge=MIN_WINDOW_DAYS,
        le=MAX_WINDOW_DAYS,
        description="days of data per run: train, then one valid day, one test day",
    )
    label: str = Field(min_length=1, description="label column produced by extract.sql")
    features: str = Field(default="features.py", description="feature module in the model folder")
    feature_params: dict[str, Any] = Field(default_factory=dict, description="keyword arguments of transform()")
    label_horizon_days: int = Field(
        default=0,
        ge=0,
        description="a row is dated when its label closes, this many days after the day it describes: the window's "
        "first days hold no rows",
    )
    row_id: str = Field(
        default="impression_id", description="extract.sql's row identifier: a row's key through splits and truth"
    )
    truth: Truth | None = Field(
        default=None, description="the synthetic warehouse's hidden probabilities of the rows (Bayes-optimal logloss)"
    )
    slices: list[str] = Field(default_factory=list, description="raw columns to report per-value metrics for")
    algorithm: Algorithm
    thresholds: Thresholds
    sources: dict[str, SourceTable] = Field(
        min_length=1, description="the warehouse tables the extract SQL reads, at their own grain"
    )
    gates: Gates
    pods: dict[str, PodSettings] = Field(
        default_factory=dict, description="stage pods: `default`, then overrides per task id (train, gate_raw, ...)"
    )
    serving: Serving
    monitor: Monitor
    run: RunPolicy = Field(default_factory=RunPolicy)
    deploy: Deploy = Field(default_factory=Deploy)

    @property
    def attribution_hours(self) -> float:
        """How long after its impression an outcome may land: the latest any source table allows."""
        return max(table.max_lateness_hours for table in self.sources.values())

    @property
    def monitor_lag_days(self) -> int:
        """The monitor's run for day ds judges day ds - this (keiko.dag_factory renders it into --ds)."""
        return self.monitor.lag_days(self.attribution_hours + 24 * self.label_horizon_days)

    _row_id = field_validator("row_id")(_identifier)

    @field_validator("sources")
    @classmethod
    def _source_names(cls, value: dict[str, SourceTable]) -> dict[str, SourceTable]:
        for name, table in value.items():
            _identifier(name)
            for reference in table.references:
                if reference.table not in value:
                    raise ValueError(f"{name}.{reference.column} references undeclared table {reference.table}")
                if reference.column not in value[reference.table].columns:
                    raise ValueError(f"{name}.{reference.column} references {reference.table}, without that column")
        return value

    @model_validator(mode="after")
    def _batch_deploys_whole(self) -> ModelConfig:
        if self.serving.mode == "batch" and self.deploy.strategy != "rolling":
            raise ValueError(
                f"deploy.strategy {self.deploy.strategy}: a batch model (serving.mode batch) deploys by switching "
                "its whole batch; use rolling"
            )
        return self

    @field_validator("pods")
    @classmethod
    def _pod_tasks(cls, value: dict[str, PodSettings]) -> dict[str, PodSettings]:
        unknown = sorted(set(value) - {"default", *STEPS})
        if unknown:
            raise ValueError(f"unknown task {', '.join(unknown)}; expected default or one of {', '.join(STEPS)}")
        return value

    def pod(self, task_id: str) -> PodSettings:
        """The pod settings of one task: its own entry over `default`."""
        default = self.pods.get("default", PodSettings())
        return self.pods[task_id].over(default) if task_id in self.pods else default

    @field_validator("schedule")
    @classmethod
    def _cron(cls, value: str) -> str:
        from croniter import croniter  # an Airflow dependency: same parser the scheduler uses

        presets = {"@hourly", "@daily", "@weekly", "@monthly", "@yearly"}
        if value not in presets and (len(value.split()) != 5 or not croniter.is_valid(value)):
            raise ValueError(f"not a 5-field cron expression or @daily-style preset: {value!r}")
        return value


class ModelDefinition:
    """A validated model.yaml with the paths and code that go with it."""

    def __init__(self, name: str, directory: Path, config: ModelConfig, config_sha256: str) -> None:
        self.name = name
        self.directory = directory
        self.config = config
        self.config_sha256 = config_sha256  # of model.yaml's bytes

    @property
    def sql_path(self) -> Path:
        return self.directory.parents[1] / "sql" / self.name / "extract.sql"

    @property
    def request_schema(self) -> dict[str, str]:
        """The fields of a /predict row: the feature module's inputs; a batch model's key alone."""
        batch = self.config.serving.batch
        return self.features.INPUT_SCHEMA if batch is None else {batch.key: batch.key_type}

    @property
    def batch_keys_sql_path(self) -> Path:
        """A batch model's key-set SQL (serving.batch.keys_sql, beside extract.sql)."""
        batch = self.config.serving.batch
        if batch is None:
            raise KeikoError(f"{self.name} is served online: it has no batch key set")
        return self.sql_path.with_name(batch.keys_sql)

    @property
    def monitor_sql_path(self) -> Path:
        return self.sql_path.with_name("monitor.sql")

    def expectation_files(self, gate: str) -> dict[str, Path]:
        """The model's own Great Expectations suites for `gate` (a suite name such as `raw`), by its suite:
        `expectations/<gate>.<suite>.json` in the model's folder."""
        files = sorted((self.directory / "expectations").glob(f"{gate}.*.json"))
        return {path.name.removeprefix(f"{gate}.").removesuffix(".json"): path for path in files}

    @cached_property
    def features(self) -> ModuleType:
        """The model's feature code: the same module is imported by the features stage and the server."""
        path = self.directory / self.config.features
        module_name = f"keiko_features_{self.name}"
        spec = importlib.util.spec_from_file_location(module_name, path)
        if spec is None or spec.loader is None or not path.is_file():
            raise ModelConfigError(f"{path}: feature module not found")
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        spec.loader.exec_module(module)
        return module

    def with_run_params(self, *, window_days: int | None, algorithm_params: dict[str, Any]) -> ModelDefinition:
        """This model as one run asked for it (a manual trigger's window or algorithm overrides).

        The result is validated like model.yaml; config_sha256 stays the file's (the registry records
        the run's parameters beside it).
        """
        params = self.config.algorithm.params
        changed = {name: value for name, value in algorithm_params.items() if params.get(name) != value}
        if window_days in (None, self.config.window_days) and not changed:
            return self
        data = self.config.model_dump(exclude_unset=True)
        data["window_days"] = window_days or self.config.window_days
        data["algorithm"]["params"] = {**params, **changed}
        return ModelDefinition(self.name, self.directory, ModelConfig.model_validate(data), self.config_sha256)

    @cached_property
    def features_sha256(self) -> str:
        return hashlib.sha256((self.directory / self.config.features).read_bytes()).hexdigest()


def _format_validation_error(path: Path, error: ValidationError) -> str:
    problems = []
    for item in error.errors():
        field = ".".join(str(p) for p in item["loc"]) or "(top level)"
        problems.append(f"{field}: {item['msg']}")
    return f"{path}: " + "; ".join(problems)


def load_model(name: str, models_dir: Path | None = None) -> ModelDefinition:
    models_dir = models_dir or settings().models_dir
    if not MODEL_NAME.match(name):
        raise KeikoError(f"invalid model name {name!r}: use lowercase letters, digits and _")
    directory = models_dir / name
    path = directory / "model.yaml"
    if not path.is_file():
        known = ", ".join(model_names(models_dir)) or "none"
        raise KeikoError(f"unknown model {name!r} (no {path}); known models: {known}")
    raw = path.read_bytes()
    try:
        data = yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        raise ModelConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ModelConfigError(f"{path}: expected a mapping at the top level")
    try:
        config = ModelConfig.model_validate(data)
    except ValidationError as exc:
        raise ModelConfigError(_format_validation_error(path, exc)) from None
    return ModelDefinition(name, directory, config, hashlib.sha256(raw).hexdigest())


def model_names(models_dir: Path | None = None) -> list[str]:
    models_dir = models_dir or settings().models_dir
    if not models_dir.is_dir():
        return []
    return sorted(p.parent.name for p in models_dir.glob("*/model.yaml"))
