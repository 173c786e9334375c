"""HTTP client for a model server (used by deploy, the demo summary and tests)."""

from __future__ import annotations

import os
import time
from typing import Any

import httpx

from keiko.errors import InfrastructureError, KeikoError


class ModelServerClient:
    def __init__(self, base_url: str, *, timeout: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/")
        token = os.environ.get("KEIKO_ADMIN_TOKEN", "")
        headers = {"authorization": f"Bearer {token}"} if token else {}
        self.http = httpx.Client(base_url=self.base_url, timeout=timeout, headers=headers)

    def __enter__(self) -> ModelServerClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.http.close()

    def _get(self, path: str) -> httpx.Response:
        try:
            return self.http.get(path)
        except httpx.TransportError as exc:
            raise InfrastructureError(f"model server {self.base_url} unreachable: {exc}") from None

    def version(self) -> dict[str, Any]:
        return self._get("/version").json()

    def ready(self) -> bool:
        return self._get("/readyz").status_code == 200

    def _admin(self, path: str, body: dict[str, Any], refused: str) -> dict[str, Any]:
        try:
            response = self.http.post(path, json=body)
        except httpx.TransportError as exc:
            raise InfrastructureError(f"model server {self.base_url} unreachable: {exc}") from None
        if response.status_code != 200:
            raise KeikoError(f"{self.base_url} refused to {refused}: {response.json().get('error', response.text)}")
        return response.json()

    def load(self, version: int) -> dict[str, Any]:
        return self._admin("/admin/load", {"version": version}, f"load v{version}")

    def set_split(self, version: int | None, weight: float = 0.0, salt: str = "") -> dict[str, Any]:
        """Serve `version` beside the serving one to `weight` of the users; None: no canary."""
        refused = f"serve v{version} as a canary at {weight:.0%}" if version else "end its canary"
        return self._admin("/admin/split", {"version": version, "weight": weight, "salt": salt}, refused)

    def metrics(self) -> str:
        return self._get("/metrics").text

    def wait_until_serving(self, version: int, *, timeout: float = 60.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        status: dict[str, Any] = {}
        while time.monotonic() < deadline:
            status = self.version()
            if status.get("version") == version and self.ready():
                return status
            time.sleep(0.2)
        raise KeikoError(f"{self.base_url} did not serve v{version} within {timeout:.0f}s (it reports {status})")

    def predict(self, rows: list[dict[str, Any]], variant: str | None = None) -> dict[str, Any]:
        """`variant`: ask for the stable or the canary version (X-Keiko-Variant, with the admin token)."""
        headers = {"x-keiko-variant": variant} if variant else {}
        response = self.http.post("/predict", json={"rows": rows}, headers=headers)
        if response.status_code != 200:
            raise KeikoError(f"{self.base_url} /predict answered {response.status_code}: {response.text[:300]}")
        return response.json()
