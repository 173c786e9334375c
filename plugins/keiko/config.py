"""Where keiko keeps things: every location is an environment variable with an embedded default.

Read at call time (never cached at import) so tests and the CLI can point KEIKO_HOME elsewhere.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

_PACKAGE_DIR = Path(__file__).resolve().parent


def _default_project_dir() -> Path:
    # plugins/keiko/ -> project root, when running from a checkout or an editable install.
    candidate = _PACKAGE_DIR.parents[1]
    return candidate if (candidate / "include").is_dir() else Path.cwd()


@dataclass(frozen=True)
class Settings:
    home: Path
    project_dir: Path
    artifact_root: str
    warehouse_dir: Path
    registry_url: str
    deploy_backend: str = "local"  # KEIKO_DEPLOY_BACKEND: local replicas, or a Kubernetes Deployment
    kubernetes_namespace: str = "keiko"
    kubernetes_conn_id: str = "kubernetes_default"

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


# The trigger param `deploy`: auto (deploy a blessed, current model), skip, force (deploy even history;
# the blessing is still required).
DEPLOY_MODES = ("auto", "skip", "force")
DEPLOY_BACKENDS = ("local", "kubernetes")


def settings() -> Settings:
    home = Path(os.environ.get("KEIKO_HOME", ".keiko")).resolve()
    project_dir = Path(os.environ.get("KEIKO_PROJECT_DIR") or _default_project_dir()).resolve()
    return Settings(
        home=home,
        project_dir=project_dir,
        artifact_root=os.environ.get("KEIKO_ARTIFACT_ROOT", (home / "artifacts").as_uri()).rstrip("/"),
        warehouse_dir=Path(os.environ.get("KEIKO_WAREHOUSE_DIR", home / "warehouse")).resolve(),
        registry_url=os.environ.get("KEIKO_REGISTRY_URL", f"sqlite:///{home / 'registry.db'}"),
        deploy_backend=os.environ.get("KEIKO_DEPLOY_BACKEND") or "local",
        kubernetes_namespace=os.environ.get("KEIKO_K8S_NAMESPACE") or "keiko",
        kubernetes_conn_id=os.environ.get("KEIKO_K8S_CONN_ID") or "kubernetes_default",
    )
