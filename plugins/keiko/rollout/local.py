"""Local backend: model-server replicas on loopback, moved one at a time through /admin/load.

A replica swaps models atomically (requests in flight finish on the model they started with), so a
rollout over replicas behind a load balancer, or a client that retries another replica, never drops
a request; at any moment each replica serves either the old or the new version.
"""

from __future__ import annotations

from collections.abc import Callable

from keiko.errors import KeikoError
from keiko.rollout import Rollout, RolloutEvent, RolloutFailed, SmokeTest
from keiko.serving.client import ModelServerClient


class LocalRollout(Rollout):
    def __init__(
        self,
        *,
        model: str,
        urls: list[str],
        smoke: SmokeTest,
        ready_timeout: float = 60.0,
        log: Callable[[str], None] = print,
        guard: Callable[[], None] = lambda: None,
    ) -> None:
        if not urls:
            raise KeikoError("no model-server replicas configured")
        super().__init__(log=log, guard=guard)
        self.model = model
        self.urls = urls
        self.smoke = smoke
        self.ready_timeout = ready_timeout

    def _move(self, server: ModelServerClient, version: int) -> None:
        server.load(version)
        self._record(server.base_url, "loaded", version)
        status = server.wait_until_serving(version, timeout=self.ready_timeout)
        self._record(server.base_url, "ready", version, f"sha256 {status['artifact_sha256'][:12]}")
        self.smoke.check(server.predict(self.smoke.rows), version)
        self._record(server.base_url, "smoke passed", version, f"{len(self.smoke.rows)} known answers")

    def run(self, version: int, previous: int | None) -> list[RolloutEvent]:
        """Move every replica to `version`; on any failure put the touched ones back on `previous`."""
        touched: list[str] = []
        for url in self.urls:
            self.guard()  # outside the try: a lost lease is no failure to roll back, nothing more is touched
            with ModelServerClient(url) as server:
                try:
                    status = server.version()
                    # Two models configured on the same ports would otherwise load each other's versions.
                    if status.get("model") != self.model:
                        raise KeikoError(
                            f"{url} serves model {status.get('model')!r}, not {self.model!r}: "
                            "check serving.port in model.yaml and KEIKO_SERVING_URLS_*"
                        )
                    if status.get("version") == version:
                        self._record(url, "unchanged", version, "already serving it")
                        continue
                    touched.append(url)
                    self._move(server, version)
                except KeikoError as exc:
                    self._record(url, "failed", version, str(exc))
                    rolled_back = self.roll_back(previous, touched)
                    if not touched:
                        outcome = "no replica had moved"
                    elif rolled_back:
                        outcome = f"rolled back {len(touched)} replica(s) to v{previous}"
                    else:
                        outcome = f"{len(touched)} replica(s) NOT rolled back, see the change's record"
                    raise RolloutFailed(
                        f"rollout of v{version} failed on {url}: {exc}; {outcome}",
                        events=self.events,
                        rolled_back=rolled_back,
                        retryable=exc.retryable,
                    ) from None
        return self.events

    def roll_back(self, previous: int | None, urls: list[str] | None = None) -> bool:
        """Put `urls` (default: every replica) back on `previous`, last moved first; False if any could
        not be restored."""
        urls = self.urls if urls is None else urls
        if previous is None:
            for url in urls:
                self._record(url, "rollback failed", None, "no previous version: nothing to roll back to")
            return False
        ok = True
        for url in reversed(urls):
            self.guard()
            with ModelServerClient(url) as server:
                try:
                    if server.version().get("version") != previous:
                        server.load(previous)
                        server.wait_until_serving(previous, timeout=self.ready_timeout)
                    self._record(url, "rolled back", previous)
                except KeikoError as exc:
                    ok = False
                    self._record(url, "rollback failed", previous, str(exc))
        return ok
