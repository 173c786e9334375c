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
from keiko.serving.split import CANARY, TrafficSplit


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

    def _status(self, server: ModelServerClient) -> dict:
        status = server.version()
        # Two models configured on the same ports would otherwise load each other's versions.
        if status.get("model") != self.model:
            hosted = status.get("models") or {}  # a process hosting several answers for each under /models/<model>
            where = (
                f" (it hosts {', '.join(hosted)}: {server.base_url}/models/{self.model})"
                if self.model in hosted
                else ""
            )
            raise KeikoError(
                f"{server.base_url} serves model {status.get('model')!r}, not {self.model!r}{where}: "
                "check serving.port in model.yaml and KEIKO_SERVING_URLS_*"
            )
        return status

    def _failed(self, url: str, what: str, exc: KeikoError, rolled_back: bool, touched: list[str], undone: str):
        """`undone`: what putting the touched replicas back did, in words ({n}: how many)."""
        if not touched:
            outcome = "no replica had moved"
        elif rolled_back:
            outcome = undone.format(n=len(touched))
        else:
            outcome = f"{len(touched)} replica(s) NOT put back, see the change's record"
        return RolloutFailed(
            f"{what} failed on {url}: {exc}; {outcome}", events=self.events, rolled_back=rolled_back,
            retryable=exc.retryable,
        )  # fmt: skip

    def run(self, version: int, previous: int | None) -> list[RolloutEvent]:
        """Move every replica to `version` (a canary of it is promoted, a canary beside it ended); on any failure
        put the touched ones back on `previous`."""
        touched: list[str] = []
        for url in self.urls:
            self.guard()  # outside the try: a lost lease is no failure to roll back, nothing more is touched
            with ModelServerClient(url) as server:
                try:
                    status = self._status(server)
                    if status.get("version") == version:
                        if status.get("canary"):
                            server.set_split(None)
                            self._record(url, "canary ended", version, f"v{status['canary']['version']} unloaded")
                        else:
                            self._record(url, "unchanged", version, "already serving it")
                        continue
                    touched.append(url)
                    self._move(server, version)
                except KeikoError as exc:
                    self._record(url, "failed", version, str(exc))
                    rolled_back = self.roll_back(previous, touched)
                    raise self._failed(
                        url,
                        f"rollout of v{version}",
                        exc,
                        rolled_back,
                        touched,
                        f"rolled back {{n}} replica(s) to v{previous}",
                    ) from None
        return self.events

    def canary(self) -> int | None:
        seen: dict[str, int | None] = {}
        for url in self.urls:
            with ModelServerClient(url) as server:
                canary = self._status(server).get("canary")
                seen[url] = canary["version"] if canary else None
        if len(set(seen.values())) > 1:
            where = ", ".join(f"{url}: {'v' + str(v) if v else 'none'}" for url, v in seen.items())
            raise KeikoError(f"{self.model}'s replicas serve different canaries ({where})")
        return next(iter(seen.values()))

    def split(self, split: TrafficSplit, stable: int) -> list[RolloutEvent]:
        """Every replica serves the canary beside `stable` at the split's weight, each checked with the canary's
        known answers (asked for by X-Keiko-Variant); on any failure the touched ones end their canary."""
        touched: list[str] = []
        for url in self.urls:
            self.guard()
            with ModelServerClient(url) as server:
                try:
                    status = self._status(server)
                    if status.get("version") != stable:
                        raise KeikoError(f"serves v{status.get('version')}, not the stable v{stable}")
                    touched.append(url)
                    server.set_split(split.version, split.weight, split.salt)
                    self._record(url, "canary", split.version, f"{split.weight:.0%} of users, stable v{stable}")
                    self.smoke.check(server.predict(self.smoke.rows, variant=CANARY), split.version)
                    self._record(url, "smoke passed", split.version, f"{len(self.smoke.rows)} known answers")
                except KeikoError as exc:
                    self._record(url, "failed", split.version, str(exc))
                    rolled_back = self.roll_back(stable, touched)  # serving stable: it ends their canary
                    raise self._failed(
                        url,
                        f"canary of v{split.version}",
                        exc,
                        rolled_back,
                        touched,
                        "ended the canary on {n} replica(s)",
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
                    status = server.version()
                    if status.get("version") != previous:
                        server.load(previous)
                        server.wait_until_serving(previous, timeout=self.ready_timeout)
                    elif status.get("canary"):
                        server.set_split(None)
                    self._record(url, "rolled back", previous)
                except KeikoError as exc:
                    ok = False
                    self._record(url, "rollback failed", previous, str(exc))
        return ok
