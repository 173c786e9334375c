"""Where keiko keeps things and how it runs: every setting is an environment variable with an embedded default.

Read at call time (never cached at import) so tests and the CLI can point KEIKO_HOME elsewhere.
`SETTINGS` is the one list of them; the README's configuration table mirrors it (a test checks).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from keiko.errors import KeikoError

_PACKAGE_DIR = Path(__file__).resolve().parent


def _default_project_dir() -> Path:
    # plugins/keiko/ -> project root, when running from a checkout or an editable install.
    candidate = _PACKAGE_DIR.parents[1]
    return candidate if (candidate / "include").is_dir() else Path.cwd()


@dataclass(frozen=True)
class Setting:
    env: str
    default: str  # the embedded default, as documented
    production: str  # what a production deployment sets
    meaning: str


SETTINGS = (
    Setting("KEIKO_HOME", "`./.keiko`", "unused (no local state)", "all local state: artifacts, registry, warehouse"),
    Setting("KEIKO_PROJECT_DIR", "the checkout", "`/opt/keiko` (the image)", "where `include/` (models, SQL) is"),
    Setting(
        "KEIKO_ARTIFACT_ROOT", "`file://$KEIKO_HOME/artifacts`", "`s3://<bucket>/keiko`", "the artifact store (fsspec)"
    ),
    Setting("KEIKO_WAREHOUSE", "`duckdb`", "`athena`", "where extract SQL runs: `duckdb` or `athena`"),
    Setting(
        "KEIKO_WAREHOUSE_DIR", "`$KEIKO_HOME/warehouse`", "unused", "DuckDB warehouse: `<table>/dt=<day>/*.parquet`"
    ),
    Setting("KEIKO_ATHENA_DATABASE", "`keiko`", "the Glue database", "Athena: database of the warehouse tables"),
    Setting("KEIKO_ATHENA_WORKGROUP", "`primary`", "`keiko`", "Athena: workgroup the queries run in"),
    Setting(
        "KEIKO_ATHENA_OUTPUT",
        "`$KEIKO_ARTIFACT_ROOT/athena-results`",
        "`s3://<bucket>/athena-results`",
        "Athena: query result location",
    ),
    Setting(
        "KEIKO_REGISTRY_URL",
        "`sqlite:///$KEIKO_HOME/registry.db`",
        "`dynamodb://keiko-registry`",
        "the model registry: a SQLAlchemy URL, or `dynamodb://<table>`",
    ),
    Setting(
        "KEIKO_BATCH_STORE_URL",
        "`redis://127.0.0.1:6390/0`",
        "`dynamodb://keiko-batch-scores`",
        "batch models' key-value store: a Redis URL, or `dynamodb://<table>`",
    ),
    Setting(
        "KEIKO_AWS_CONN_ID",
        "empty: boto's chain (env, IRSA)",
        "`aws_default`",
        "Airflow AWS connection for S3, DynamoDB and Athena (credentials, region, endpoint)",
    ),
    Setting(
        "KEIKO_ALERT_CONN_ID",
        "`keiko_alerts` (alerts off while it does not exist)",
        "`keiko_alerts`",
        "Airflow HTTP connection of the webhook that failure alerts are posted to",
    ),
    Setting("KEIKO_STAGE_RUNNER", "`local`", "`kubernetes`", "stages run as `local` subprocesses or `kubernetes` pods"),
    Setting("KEIKO_IMAGE", "`keiko:latest`", "`<registry>/keiko:<tag>`", "image of stage pods and model servers"),
    Setting("KEIKO_K8S_NAMESPACE", "`keiko`", "`keiko`", "namespace of stage pods and model-server Deployments"),
    Setting("KEIKO_K8S_CONN_ID", "`kubernetes_default`", "in-cluster connection", "Airflow Kubernetes connection"),
    Setting("KEIKO_K8S_SERVICE_ACCOUNT", "`keiko-stage`", "`keiko-stage`", "service account of stage pods"),
    Setting("KEIKO_K8S_ENV_SECRET", "`keiko-env`", "`keiko-env`", "Secret whose keys become stage pods' environment"),
    Setting("KEIKO_K8S_CONFIGMAP", "`keiko-config`", "`keiko-config`", "ConfigMap of the keiko settings for pods"),
    Setting("KEIKO_DEPLOY_BACKEND", "`local`", "`kubernetes`", "rollout to `local` replicas or a Deployment"),
    Setting(
        "KEIKO_SERVING_URLS_<MODEL>",
        "`127.0.0.1:<serving.port>+i`",
        "the Service (derived)",
        "comma-separated model-server URLs",
    ),
    Setting(
        "KEIKO_PREDICTION_LOG_URL",
        "`file://$KEIKO_WAREHOUSE_DIR/predictions`",
        "`s3://<bucket>/<warehouse>/predictions` (the Glue table's location)",
        "where model servers write the prediction log (fsspec): the warehouse table `predictions`",
    ),
    Setting("KEIKO_ADMIN_TOKEN", "empty (loopback only)", "from a Secret", "bearer token for `/admin/load`"),
    Setting("KEIKO_MODEL_VERSION", "empty: `production`", "set by the rollout", "version a server loads at start"),
    Setting("KEIKO_CANARY_VERSION", "empty: no canary", "set by a canary's rollout", "version served beside it"),
    Setting("KEIKO_CANARY_WEIGHT", "`0`", "set by a canary's rollout", "share of the users on the canary"),
    Setting("KEIKO_CANARY_SALT", "empty", "set by a canary's rollout", "the salt of the users' hash (per rollout)"),
    Setting(
        "KEIKO_LEASE_SECONDS",
        "`60`",
        "`60`",
        "a change of production's lease: renewed while it runs, expires this long after its holder dies",
    ),
    Setting(
        "KEIKO_LEASE_WAIT_SECONDS",
        "`120`",
        "`900` (a Kubernetes rollout takes minutes)",
        "how long a deploy or rollback waits for another change of the same model before it fails",
    ),
)

# The trigger param `deploy`: auto (deploy a blessed, current model), skip, force (deploy even history;
# the blessing is still required).
DEPLOY_MODES = ("auto", "skip", "force")
DEPLOY_BACKENDS = ("local", "kubernetes")
STAGE_RUNNERS = ("local", "kubernetes")
WAREHOUSES = ("duckdb", "athena")
PREDICTIONS_TABLE = "predictions"  # the warehouse table of the prediction log (keiko.serving.prediction_log)


@dataclass(frozen=True)
class Settings:
    home: Path
    project_dir: Path
    artifact_root: str
    warehouse_dir: Path
    registry_url: str
    warehouse: str = "duckdb"
    athena_database: str = "keiko"
    athena_workgroup: str = "primary"
    athena_output: str = ""
    aws_conn_id: str = ""
    alert_conn_id: str = "keiko_alerts"
    stage_runner: str = "local"
    image: str = "keiko:latest"
    deploy_backend: str = "local"  # KEIKO_DEPLOY_BACKEND: local replicas, or a Kubernetes Deployment
    kubernetes_namespace: str = "keiko"
    kubernetes_conn_id: str = "kubernetes_default"
    kubernetes_service_account: str = "keiko-stage"
    kubernetes_env_secret: str = "keiko-env"
    kubernetes_configmap: str = "keiko-config"
    lease_seconds: float = 60.0
    lease_wait_seconds: float = 120.0
    prediction_log_url: str = ""
    batch_store_url: str = "redis://127.0.0.1:6390/0"

    @property
    def models_dir(self) -> Path:
        return self.project_dir / "include" / "models"

    @property
    def sql_dir(self) -> Path:
        return self.project_dir / "include" / "sql"

    def server_deployment(self, model: str) -> str:
        """The Kubernetes Deployment (and Service) of `model`'s server, as in deploy/k8s/."""
        return f"keiko-{model.replace('_', '-')}-server"

    def serving_urls(self, model: str, port: int, replicas: int = 1) -> list[str]:
        """Where `model` is served: KEIKO_SERVING_URLS_<MODEL> (comma-separated) if set; on Kubernetes the
        Service; else `replicas` loopback ports from `port` on (what `keiko serve --replicas N` starts)."""
        raw = os.environ.get(f"KEIKO_SERVING_URLS_{model.upper()}", "")
        urls = [u.strip().rstrip("/") for u in raw.split(",") if u.strip()]
        if urls:
            return urls
        if self.deploy_backend == "kubernetes":
            return [f"http://{self.server_deployment(model)}.{self.kubernetes_namespace}.svc:{port}"]
        return [f"http://127.0.0.1:{port + i}" for i in range(replicas)]


def _choice(env: str, default: str, allowed: tuple[str, ...]) -> str:
    value = os.environ.get(env) or default
    if value not in allowed:
        raise KeikoError(f"{env}={value!r}: expected one of {', '.join(allowed)}")
    return value


def _seconds(env: str, default: float) -> float:
    text = os.environ.get(env) or str(default)
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0 or value == float("inf"):
        raise KeikoError(f"{env}={text!r}: expected a positive number of seconds")
    return value


def settings() -> Settings:
    env = os.environ.get
    home = Path(env("KEIKO_HOME", ".keiko")).resolve()
    project_dir = Path(env("KEIKO_PROJECT_DIR") or _default_project_dir()).resolve()
    artifact_root = (env("KEIKO_ARTIFACT_ROOT") or (home / "artifacts").as_uri()).rstrip("/")
    warehouse_dir = Path(env("KEIKO_WAREHOUSE_DIR") or home / "warehouse").resolve()
    return Settings(
        home=home,
        project_dir=project_dir,
        artifact_root=artifact_root,
        warehouse_dir=warehouse_dir,
        registry_url=env("KEIKO_REGISTRY_URL") or f"sqlite:///{home / 'registry.db'}",
        warehouse=_choice("KEIKO_WAREHOUSE", "duckdb", WAREHOUSES),
        athena_database=env("KEIKO_ATHENA_DATABASE") or "keiko",
        athena_workgroup=env("KEIKO_ATHENA_WORKGROUP") or "primary",
        athena_output=(env("KEIKO_ATHENA_OUTPUT") or f"{artifact_root}/athena-results").rstrip("/"),
        aws_conn_id=env("KEIKO_AWS_CONN_ID") or "",
        alert_conn_id=env("KEIKO_ALERT_CONN_ID") or "keiko_alerts",
        stage_runner=_choice("KEIKO_STAGE_RUNNER", "local", STAGE_RUNNERS),
        image=env("KEIKO_IMAGE") or "keiko:latest",
        deploy_backend=env("KEIKO_DEPLOY_BACKEND") or "local",
        kubernetes_namespace=env("KEIKO_K8S_NAMESPACE") or "keiko",
        kubernetes_conn_id=env("KEIKO_K8S_CONN_ID") or "kubernetes_default",
        kubernetes_service_account=env("KEIKO_K8S_SERVICE_ACCOUNT") or "keiko-stage",
        kubernetes_env_secret=env("KEIKO_K8S_ENV_SECRET") or "keiko-env",
        kubernetes_configmap=env("KEIKO_K8S_CONFIGMAP") or "keiko-config",
        lease_seconds=_seconds("KEIKO_LEASE_SECONDS", 60.0),
        lease_wait_seconds=_seconds("KEIKO_LEASE_WAIT_SECONDS", 120.0),
        batch_store_url=env("KEIKO_BATCH_STORE_URL") or "redis://127.0.0.1:6390/0",
        prediction_log_url=(env("KEIKO_PREDICTION_LOG_URL") or (warehouse_dir / PREDICTIONS_TABLE).as_uri()).rstrip(
            "/"
        ),
    )
