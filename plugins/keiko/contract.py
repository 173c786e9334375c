"""The step contract: every run artifact's name and place, and every record the steps pass each other.

Data moves between steps only through the artifact store. `RunLayout(store, model, ds)` names every file of
one model run, under `{artifact_root}/{model}/{ds}/`; `ModelLayout(store, model)` the model's own files
(published versions, rollback records). No other module spells one of these names
(tests/unit/test_contract.py checks it).

Each step returns a frozen, typed result (a `StepResult`; `TASK` names its step). The step runner writes it
to the step's result file (`stages/<stage>.json`, `gates/<suite>.json`) and prints it as the task's XCom;
the steps after it read it back typed, with `RunLayout.read_result(TrainResult)`. The larger records a
step writes for others (the evaluation, the blessing, the production change) are typed here too. A file
that does not match its record (written by another keiko version, or edited by hand) is a clear error
naming it, never a KeyError three steps later.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, StrictBool, ValidationError

from keiko.errors import KeikoError, MissingDataError
from keiko.pipeline import MODEL_DAG, MONITOR_DAG, STEPS

if TYPE_CHECKING:
    from keiko.storage import ArtifactStore

# ------------------------------------------------------------------------------ names in a run directory

RAW = "raw.parquet"
EXTRACT_SQL = "extract.sql"  # the SQL as rendered for this run
SPLIT = "{split}.parquet"
PROFILE = "profile.json"
MODEL_ARTIFACT = "model.{format}"  # the format (npz, cbm) is the algorithm's
TRAINING_LOG = "training_log.json"
EVALUATION = "evaluation.json"
GOLDEN = "golden.parquet"
BLESSING = "blessing.json"
BATCH_KEYS_SQL = "batch_keys.sql"  # a batch model's key-set SQL as rendered for the run
BATCH_SCORES = "batch.parquet"  # the batch it scored: (key, score) of every key written to the batch store
DEPLOY_RECORD = "deploy.json"
ROLLBACK_RECORD = "rollback.json"  # the rollback task's production change
CANARY_RECORD = "canary.json"  # a canary's or an A/B experiment's steps, verdicts and end (CanaryRecord)
CANARY_CHANGE = "canary/{step:02d}-{event}.json"  # its production changes after the first (deploy.json)
REPORT = "report.html"  # the run page: keiko.report draws it, keiko.run_pages serves it
ROC_PLOT = "plots/roc.png"
CALIBRATION_PLOT = "plots/calibration.png"
DRIFT_PLOT = "plots/drift.png"
STAGE_RESULT = "stages/{name}.json"
GATE_RESULT = "gates/{name}.json"
DATA_DOCS = "gates/{name}/data_docs"
DATA_DOCS_INDEX = "index.html"
STEP_RECORD = "steps/{task}.json"
# ... and under the model's directory
PUBLISHED = "versions/{key}/{name}"  # a registered version's artifacts: never overwritten by reruns
ROLLBACK_LOG = "rollbacks/{at}.json"  # `keiko rollback`'s production changes
CANARY_POINTER = "canary.json"  # which run's canary is the model's latest (CanaryPointer): keiko status, rollback
# gate_raw's verdict on one warehouse partition, keyed by what it was judged on (content, references, suite)
PARTITION_VERDICT = "partitions/{table}/dt={day}/{key}.json"

# ... and of a monitor run, under `{artifact_root}/{model}/monitor/{ds}/` (RunLayout with dag=MONITOR_DAG):
# monitor.sql, online.parquet, stages/<stage>.json, gates/<suite>.json, steps/<task>.json
MONITOR_SQL = "monitor.sql"  # the monitor's SQL as rendered for the day
ONLINE = "online.parquet"  # each logged answer of the day with its outcome: what the monitor's gates judge
# ... and the model's monitoring page, under the model's directory
MONITORING_PAGE = "monitor/index.html"
MONITORING_PLOT = "monitor/plots/{name}.png"

SPLITS = ("train", "valid", "test")
GOLDEN_EXPECTED = "expected_prediction"  # the golden set's column of the candidate's offline answers


@dataclass(frozen=True)
class RunLayout:
    """Where the files of `model`'s run for day `ds` live. Pure naming: nothing is read or written here
    but through `read_result`/`write_result`/`read`."""

    store: ArtifactStore
    model: str
    ds: str
    dag: str = MODEL_DAG  # MONITOR_DAG: the files of the monitor's run for day `ds`

    def uri(self, name: str) -> str:
        if self.dag == MONITOR_DAG:
            return self.store.uri(self.model, f"{MONITOR_DAG}/{self.ds}", name)
        return self.store.uri(self.model, self.ds, name)

    @property
    def monitor_sql(self) -> str:
        return self.uri(MONITOR_SQL)

    @property
    def online(self) -> str:
        return self.uri(ONLINE)

    @property
    def raw(self) -> str:
        return self.uri(RAW)

    @property
    def extract_sql(self) -> str:
        return self.uri(EXTRACT_SQL)

    def split(self, split: str) -> str:
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}: expected one of {', '.join(SPLITS)}")
        return self.uri(SPLIT.format(split=split))

    @property
    def profile(self) -> str:
        return self.uri(PROFILE)

    def model_artifact(self, fmt: str) -> str:
        return self.uri(MODEL_ARTIFACT.format(format=fmt))

    @property
    def training_log(self) -> str:
        return self.uri(TRAINING_LOG)

    @property
    def evaluation(self) -> str:
        return self.uri(EVALUATION)

    @property
    def golden(self) -> str:
        return self.uri(GOLDEN)

    @property
    def blessing(self) -> str:
        return self.uri(BLESSING)

    @property
    def batch_keys_sql(self) -> str:
        return self.uri(BATCH_KEYS_SQL)

    @property
    def batch_scores(self) -> str:
        return self.uri(BATCH_SCORES)

    @property
    def deploy_record(self) -> str:
        return self.uri(DEPLOY_RECORD)

    @property
    def rollback_record(self) -> str:
        return self.uri(ROLLBACK_RECORD)

    @property
    def canary_record(self) -> str:
        return self.uri(CANARY_RECORD)

    def canary_change(self, step: int, event: str) -> str:
        return self.uri(CANARY_CHANGE.format(step=step, event=event))

    @property
    def report(self) -> str:
        return self.uri(REPORT)

    def plot(self, name: str) -> str:
        """`name`: ROC_PLOT, CALIBRATION_PLOT or DRIFT_PLOT (the run page links them relative to itself)."""
        return self.uri(name)

    def step_result(self, task: str) -> str:
        step = STEPS[task]
        return self.uri((GATE_RESULT if step.kind == "gate" else STAGE_RESULT).format(name=step.name))

    def data_docs(self, task: str) -> str:
        """The directory of a gate's Data Docs site."""
        return self.uri(DATA_DOCS.format(name=STEPS[task].name))

    def data_docs_index(self, task: str) -> str:
        return f"{self.data_docs(task)}/{DATA_DOCS_INDEX}"

    def step_record(self, task: str) -> str:
        return self.uri(STEP_RECORD.format(task=task))

    @property
    def step_records(self) -> str:
        """A glob of every step record of the run."""
        return self.uri(STEP_RECORD.format(task="*"))

    def read_result(self, kind: type[R]) -> R:
        """The result `kind.TASK` wrote for this run; MissingDataError if that step has not run."""
        uri = self.step_result(kind.TASK)
        if not self.store.exists(uri):
            step = STEPS[kind.TASK]
            raise MissingDataError(
                f"{kind.TASK} has no result for {self.model} {self.ds} ({uri}): run "
                f"`{step.command} --model {self.model} --ds {self.ds}` first"
            )
        return self.read(uri, kind)

    def write_result(self, result: StepResult) -> str:
        return self.write(self.step_result(result.TASK), result)

    def read(self, uri: str, kind: type[M]) -> M:
        return parse(self.store.read_bytes(uri), kind, uri)

    def find(self, uri: str, kind: type[M]) -> M | None:
        """The record at `uri`, or None if nothing was written there."""
        return self.read(uri, kind) if self.store.exists(uri) else None

    def write(self, uri: str, record: BaseModel) -> str:
        """Write `record` as JSON; its sha256."""
        return self.store.write_json(uri, record.model_dump(mode="json"))


@dataclass(frozen=True)
class ModelLayout:
    """Where a model's own files live, and globs over its runs."""

    store: ArtifactStore
    model: str

    def published(self, key: str, name: str) -> str:
        return f"{self.store.root_uri}/{self.model}/{PUBLISHED.format(key=key, name=name)}"

    def rollback_record(self, at: dt.datetime) -> str:
        stamp = at.astimezone(dt.UTC).strftime("%Y-%m-%dT%H%M%S.%fZ")
        return f"{self.store.root_uri}/{self.model}/{ROLLBACK_LOG.format(at=stamp)}"

    @property
    def canary_pointer(self) -> str:
        return f"{self.store.root_uri}/{self.model}/{CANARY_POINTER}"

    def partition_verdict(self, table: str, day: str, key: str) -> str:
        return f"{self.store.root_uri}/{self.model}/{PARTITION_VERDICT.format(table=table, day=day, key=key)}"

    @property
    def monitoring_page(self) -> str:
        return f"{self.store.root_uri}/{self.model}/{MONITORING_PAGE}"

    def monitoring_plot(self, name: str) -> str:
        return f"{self.store.root_uri}/{self.model}/{MONITORING_PLOT.format(name=name)}"

    def results_of_every_run(self, task: str) -> list[tuple[str, str]]:
        """(day, URI) of `task`'s result file in every run directory of the model (of its monitor runs, for a
        monitor step), oldest day first."""
        pattern = RunLayout(self.store, self.model, "*", STEPS[task].dag).step_result(task)
        return [(uri.rsplit("/", 3)[-3], uri) for uri in self.store.glob(pattern)]

    def run_days(self) -> list[str]:
        """Days with at least one recorded step, oldest first."""
        pattern = RunLayout(self.store, self.model, "*").step_records
        return sorted({day for uri in self.store.glob(pattern) if _is_day(day := uri.rsplit("/", 3)[-3])})


def _is_day(text: str) -> bool:
    try:
        dt.date.fromisoformat(text)
    except ValueError:
        return False
    return True


# ------------------------------------------------------------------------------------------ the records


class Record(BaseModel):
    """A record in the artifact store: frozen, every field declared, NaN and infinity kept as written."""

    model_config = ConfigDict(frozen=True, extra="forbid", ser_json_inf_nan="constants")


M = TypeVar("M", bound=BaseModel)


def parse(data: bytes, kind: type[M], source: str) -> M:
    """`data` (JSON) as a `kind`; KeikoError naming `source` and the first mismatch otherwise."""
    try:
        return kind.model_validate(json.loads(data))
    except (ValueError, ValidationError) as exc:
        detail = exc.errors()[0] if isinstance(exc, ValidationError) else {"msg": str(exc), "loc": ()}
        where = ".".join(map(str, detail["loc"])) or "the file"
        raise KeikoError(
            f"{source} is not a valid {kind.__name__} (written by another keiko version, or edited?): "
            f"{where}: {detail['msg']}"
        ) from None


class StepResult(Record):
    """What a step hands the steps after it (and Airflow, as XCom). The runner adds the timings."""

    TASK: ClassVar[str]
    seconds: float = 0.0
    peak_rss_mb: float = 0.0


R = TypeVar("R", bound=StepResult)


class ExtractResult(StepResult):
    TASK: ClassVar[str] = "extract"
    raw_uri: str
    raw_sha256: str
    rows: int
    window_start: str
    window_end: str


class Split(Record):
    uri: str
    sha256: str
    rows: int
    label_rate: float


class FeaturesResult(StepResult):
    TASK: ClassVar[str] = "features"
    splits: dict[str, Split]
    profile_uri: str
    profile_sha256: str


class TrainResult(StepResult):
    TASK: ClassVar[str] = "train"
    model_uri: str
    model_sha256: str
    model_bytes: int
    algorithm: str
    best_epoch: int
    describe: dict[str, Any]


class EvaluateResult(StepResult):
    TASK: ClassVar[str] = "evaluate"
    golden_uri: str
    golden_sha256: str
    evaluation_uri: str
    evaluation_sha256: str
    candidate_logloss: float
    candidate_auc: float
    bayes_optimal_logloss: float | None


class RegisterResult(StepResult):
    TASK: ClassVar[str] = "register"
    version: int
    status: str
    created: bool
    artifact_sha256: str


class BatchScoreResult(StepResult):
    """batch_score: the registered version's scores of the run's key set, written to the batch store under the
    version beside the serving one (the pointer does not move: deploy moves it)."""

    TASK: ClassVar[str] = "batch_score"
    version: int
    keys: int  # rows of the key set
    written: int  # keys the store acknowledged
    unscored: int  # keys whose score was not a probability (not written: they fall back)
    chunks: int
    keys_per_second: float
    scores_uri: str
    scores_sha256: str
    store: str  # which store, in words
    prior: float  # the fallback score of a missing or expired key: training's label rate
    scored_at: float  # epoch seconds
    expires_at: float  # epoch seconds: the batch's TTL


class DeployResult(StepResult):
    TASK: ClassVar[str] = "deploy"
    version: int
    previous_version: int | None  # production before this deploy
    servers: list[str]
    strategy: Literal["rolling", "canary", "ab"] = "rolling"  # canary, ab: `version` serves beside production
    production_moved: bool = False  # the alias moved (keiko.assets: the production Asset's event)


# A canary's (or A/B experiment's) state: running and awaiting approval go on; the others are ends.
RolloutState = Literal["running", "awaiting approval", "promoted", "reverted", "kept stable"]


class CanaryResult(StepResult):
    """One analysis of a canary (or A/B experiment) step: `state` running means check again after
    `next_check_seconds`; awaiting approval hands the decision to a person (approve_promotion, then promote);
    promoted, reverted and kept stable are ends."""

    TASK: ClassVar[str] = "canary"
    state: RolloutState
    version: int
    stable_version: int
    step: int
    weight: float
    verdict: str
    summary: str
    next_check_seconds: float
    production_moved: bool = False  # this call promoted the canary
    approval: str | None = None  # awaiting approval: why a person decides, and the evidence (approve_promotion's body)


class PromoteResult(StepResult):
    """What promote applied of a person's decision on a canary or A/B experiment."""

    TASK: ClassVar[str] = "promote"
    decision: str  # keiko.operators.approval's option
    decided_by: str
    state: Literal["promoted", "kept stable"]
    version: int  # production now
    production_moved: bool = False


class RollbackResult(StepResult):
    TASK: ClassVar[str] = "rollback"
    version: int  # production now
    previous_version: int | None  # production before the rollback
    servers: list[str]
    production_moved: bool = False  # the alias moved (not so when the rollback only ended a canary)


class GateOutcome(Record):
    """One expectation's verdict, as the gate table and the run page show it."""

    suite: str
    expectation: str
    column: str
    observed: str
    expected: str
    passed: bool
    value: float | None = None  # the numeric observed value, when there is one (headroom reports)


class GateResult(StepResult):
    gate: str
    success: bool
    expectations: int
    failed: int
    outcomes: list[GateOutcome]
    data_docs: str  # the Data Docs index, rendered when an expectation failed; "" when the gate passed
    phases: dict[str, float] = Field(default_factory=dict)  # the gate process's seconds by phase (keiko.phases)


class PartitionAggregates(Record):
    """What the across-days checks compare of one source partition with the other days."""

    rows: int
    hour_shares: list[float]  # of the events, by hour of day (UTC), 24 values
    top_shares: dict[str, float]  # column -> share of its most frequent value


class PartitionVerdict(Record):
    """gate_raw's row-level verdict on one source partition (`table`/dt=`day`), kept under a key of its
    content, of the partitions its references resolve in, and of the suite: any later run whose window holds
    the same partition reuses it; a rewritten partition gets a new key and is validated again."""

    table: str
    day: str
    key: str
    content: str  # the warehouse's fingerprint of the partition (sha256 of its files; on S3, of its ETags)
    success: bool
    expectations: int
    failed: list[GateOutcome]
    aggregates: PartitionAggregates
    run_id: str
    validated_at: str


class RawGateResult(GateResult):
    TASK: ClassVar[str] = "gate_raw"
    ds: str
    daily_rows: dict[str, int]
    validated_partitions: list[str] = Field(default_factory=list)  # table/dt=day judged row by row by this run
    reused_partitions: list[str] = Field(default_factory=list)  # table/dt=day whose stored verdict was reused
    # What the volume and label-rate bands were judged on (absent when the extract had no dt or label column).
    volume_reference: float | None = None
    history_rows: dict[str, int] = Field(default_factory=dict)  # earlier days the volume was judged against
    volume_band: list[float] | None = None
    daily_label_rate: dict[str, float] = Field(default_factory=dict)


class FeaturesGateResult(GateResult):
    TASK: ClassVar[str] = "gate_features"


class TrainingGateResult(GateResult):
    TASK: ClassVar[str] = "gate_training"


class EvaluationGateResult(GateResult):
    TASK: ClassVar[str] = "gate_evaluation"
    blessed: bool


class BatchGateResult(GateResult):
    TASK: ClassVar[str] = "gate_batch"
    version: int
    coverage: float  # keys in the store / keys in the set
    compared_with: int | None  # the serving batch's version whose scores this one's are judged against
    score_kl: float | None
    p95_lookup_ms: float


class ServingGateResult(GateResult):
    TASK: ClassVar[str] = "gate_serving"
    version: int


class JoinOutcomesResult(StepResult):
    """join_outcomes: the monitored day's population (the rows the model answers for: ctr every impression,
    cvr every clicked one), how many of them have a logged answer, and by which version."""

    TASK: ClassVar[str] = "join_outcomes"
    day: str
    online_uri: str
    online_sha256: str
    population: int
    answered: int
    outcomes: int  # positives in the population: clicks (ctr), conversions (cvr)
    versions: dict[str, int]  # answered rows per serving version: its share of the traffic
    bayes_optimal_logloss: float | None  # the world's own probabilities on the answered rows (synthetic only)
    fallbacks: int = 0  # answered rows a batch model answered with its fallback (variant `fallback`)


class VersionOnline(Record):
    """One serving version on one day: its online figures against its own offline evaluation."""

    version: int
    online: Metrics
    offline: Metrics | None  # the version's test-day evaluation (registry); None if it has none
    logloss_gap: float | None  # online / offline logloss - 1
    auc_drop: float | None  # offline - online AUC
    judged: bool  # False: fewer answered rows than monitor.min_rows


class OnlineGateResult(GateResult):
    TASK: ClassVar[str] = "gate_online"
    day: str
    versions: dict[str, VersionOnline]


class DriftGateResult(GateResult):
    TASK: ClassVar[str] = "gate_drift"
    day: str
    divergence: dict[str, dict[str, float]]  # version -> field (and `score`) -> KL from its training profile
    unseen_share: dict[str, dict[str, float]]  # version -> field -> share of served values training never saw


class VolumeGateResult(GateResult):
    TASK: ClassVar[str] = "gate_volume"
    day: str
    answered_share: float
    fallback_share: float | None = None  # a batch model's answered rows that fell back: missing or expired keys
    training_rows: dict[str, int]  # the runs' training rows (extracted) by day: the trend's points
    offline_logloss: dict[str, float]  # the runs' test logloss by day
    rows_daily_change: float | None  # fitted daily change of training rows (-0.03: 3 % fewer a day)
    logloss_daily_change: float | None


RESULTS: dict[str, type[StepResult]] = {
    kind.TASK: kind
    for kind in (
        ExtractResult,
        RawGateResult,
        FeaturesResult,
        FeaturesGateResult,
        TrainResult,
        TrainingGateResult,
        EvaluateResult,
        EvaluationGateResult,
        RegisterResult,
        BatchScoreResult,
        BatchGateResult,
        DeployResult,
        ServingGateResult,
        CanaryResult,
        PromoteResult,
        RollbackResult,
        JoinOutcomesResult,
        OnlineGateResult,
        DriftGateResult,
        VolumeGateResult,
    )
}


class Metrics(Record):
    """keiko.metrics.summary of one model on some rows."""

    rows: int
    positives: int
    logloss: float
    auc: float
    calibration: float
    mean_prediction: float


class ProductionMetrics(Metrics):
    version: int
    window_end: str  # after the test day: production trained on it, so comparing with it is not out of time


class Evaluation(Record):
    """evaluate's verdict-free measurements (evaluation.json); gate_evaluation judges them."""

    model: str
    ds: str
    test_rows: int
    candidate: Metrics
    production: ProductionMetrics | None
    bayes_optimal_logloss: float | None
    candidate_gap_to_bayes: float | None
    bayes_optimal_calibration: float | None = None
    candidate_calibration_to_truth: float | None = None
    slices: dict[str, dict[str, Metrics]]
    # The candidate's test-day predictions as a training profile column (keiko.profiling): what the monitor
    # compares the version's served scores with. None in an evaluation from before the monitor.
    prediction_profile: dict[str, Any] | None = None


class Blessing(Record):
    """gate_evaluation's verdict, bound to the exact candidate and evaluation it judged (blessing.json)."""

    blessed: StrictBool
    reasons: list[str]
    model_sha256: str
    evaluation_sha256: str
    production_version: int | None  # the production it was compared with; None: absolute thresholds only
    metrics: dict[str, float | None]
    judged_at: str


class RolloutEvent(Record):
    """One step of a rollout on one server (a replica, or a Kubernetes Deployment)."""

    replica: str
    # "loaded", "patched", "ready", "smoke passed", "failed", "rolled back", "rollback failed", "unchanged"
    event: str
    version: int | None
    at: str = Field(default_factory=lambda: dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds"))
    detail: str = ""


class ProductionChange(Record):
    """One change of what a model serves, by the production path (keiko.rollout.production): the deploy
    record, the rollback task's record, `keiko rollback`'s record."""

    model: str
    action: Literal["deploy", "rollback", "canary"]  # canary: to_version serves beside production to a share
    from_version: int | None  # production when the change started
    to_version: int
    canary_weight: float | None = None  # a canary change: the share of the users on to_version
    reason: str  # why it was asked for
    requested_by: str  # the lease holder: which run or command
    backend: str
    replicas: list[str]
    started_at: str
    finished_at: str
    success: bool
    message: str  # one line: what happened
    rolled_back: bool  # after a failure: every server that moved is back on from_version
    alias_moved: bool
    events: list[RolloutEvent]
    record_uri: str

    def started_since(self, moment: str) -> bool:
        """Whether this change started at or after `moment` (ISO 8601): written by what ran from then on."""
        return dt.datetime.fromisoformat(self.started_at) >= dt.datetime.fromisoformat(moment)


class CanaryCheck(Record):
    """One comparison of a step's analysis: canary against stable on the same period."""

    check: str
    stable: float | None
    canary: float | None
    allowed: str
    verdict: Literal["pass", "breach", "not enough data", "differs"]  # differs: an experiment's non-guard breach
    detail: str = ""
    low: float | None = None  # a tested check's interval of canary - stable
    high: float | None = None


class CanaryVerdict(Record):
    """A step's analysis: hold (too little data yet), pass, breach (revert), timeout (held too long: revert)."""

    at: str
    step: int  # from 1
    weight: float
    held_minutes: float
    verdict: Literal["pass", "hold", "breach", "timeout"]
    requests: dict[str, int]  # variant -> requests answered in the step
    outcomes: dict[str, int]  # variant -> rows whose outcome is known
    positives: dict[str, int]
    checks: list[CanaryCheck]
    summary: str


class CanaryEvent(Record):
    """The rollout's timeline: a step started, the canary promoted or reverted, the experiment decided."""

    at: str
    step: int
    weight: float
    event: str
    detail: str = ""


class VariantCounts(Record):
    """What a variant's servers counted (/metrics, summed over the replicas): requests, 5xx, latency buckets."""

    requests: int = 0
    errors: int = 0
    latency_buckets: dict[str, int] = Field(default_factory=dict)  # upper bound in seconds ("+Inf") -> cumulative


class CanaryRecord(Record):
    """A canary's or A/B experiment's whole life: its split, steps, verdicts and end (the run's canary.json)."""

    model: str
    strategy: Literal["canary", "ab"]
    version: int
    stable_version: int
    salt: str
    run_id: str | None
    state: RolloutState
    step: int
    weight: float
    started_at: str
    step_started_at: str
    baseline: dict[str, VariantCounts]  # variant -> counts when the step started
    timeline: list[CanaryEvent]
    verdicts: list[CanaryVerdict]  # each step's latest verdict of each kind, in order
    finished_at: str | None = None
    message: str = ""
    report: str | None = None  # an A/B experiment's decision, in words
    approval: str | None = None  # awaiting approval: why a person decides; then who decided what

    @property
    def running(self) -> bool:
        return self.state == "running"


class CanaryPointer(Record):
    """The model's latest canary: which run, and where its record is."""

    ds: str
    run_id: str | None
    record_uri: str
