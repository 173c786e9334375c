"""A batch model's rollout backend: production is the batch store's pointer, not the servers' loaded model.

The servers answer a batch model from the store, through the pointer, so moving production is one compare-and-set
of the pointer (keiko.batch_store): every reader sees the old batch or the new one, never a mix. The new batch must
be sealed (batch_score finished it); after the switch a sample of its keys is looked up through the pointer and must
answer as the batch scored them, or the pointer goes back. Chosen by keiko.rollout.production.open_backend for every
`serving.mode: batch` model, on any KEIKO_DEPLOY_BACKEND: the pointer is the same wherever the servers run.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import numpy as np

from keiko.batch_store import BatchNotSealed, BatchStore, PointerMoved
from keiko.contract import RolloutEvent
from keiko.errors import KeikoError
from keiko.rollout import SMOKE_ROWS, Rollout, RolloutFailed, _unguarded
from keiko.serving.split import TrafficSplit
from keiko.storage import ArtifactStore

POINTER = "batch pointer"  # how the record names what moved


class BatchRollout(Rollout):
    def __init__(
        self,
        *,
        model: str,
        key: str,
        store: BatchStore,
        artifacts: ArtifactStore,
        log: Callable[[str], None] = print,
        guard: Callable[[], None] = _unguarded,
    ) -> None:
        super().__init__(log=log, guard=guard)
        self.model = model
        self.key = key
        self.store = store
        self.artifacts = artifacts

    def serving_where(self, servers: int) -> str:
        return f"the batch pointer that {servers} server(s) read"

    def serving(self) -> int | None:
        pointer = self.store.pointer(self.model)
        return None if pointer is None else pointer.version

    def run(self, version: int, previous: int | None) -> list[RolloutEvent]:
        self.guard()
        if self.serving() == version:
            self._record(POINTER, "already serving", version)
            return self.events
        try:
            self.store.switch(self.model, version, expected=previous)
        except (BatchNotSealed, PointerMoved) as exc:
            self._record(POINTER, "refused", version, str(exc))
            raise RolloutFailed(str(exc), events=self.events, rolled_back=True) from None
        self._record(POINTER, "switched", version, f"from v{previous}" if previous is not None else "first batch")
        try:
            self.check(version)
        except KeikoError as exc:
            self._record(POINTER, "check failed", version, str(exc))
            rolled_back = self.roll_back(previous, expected=version)
            raise RolloutFailed(f"v{version}'s batch: {exc}", events=self.events, rolled_back=rolled_back) from None
        return self.events

    def check(self, version: int) -> None:
        """Keys of the batch looked up through the pointer answer as `version`, with the scores batch_score wrote."""
        manifest = self.store.manifest(self.model, version)
        if manifest is None or not manifest.scores_uri:
            raise KeikoError(f"no manifest with its scores for {self.model} v{version}")
        sample = self.artifacts.read_table(manifest.scores_uri).slice(0, SMOKE_ROWS)
        keys = [str(k) for k in sample.column(self.key).to_pylist()]
        expected = np.asarray(sample.column("score").to_numpy(), dtype=np.float64)
        answers = self.store.lookup(self.model, keys)
        versions = {a.version for a in answers}
        if versions != {version}:
            raise KeikoError(f"lookups answered as {sorted(map(str, versions))}, expected v{version}")
        lacking = [a for a in answers if a.fallback is not None]
        if lacking:
            raise KeikoError(
                f"{len(lacking)} of {len(keys)} of its keys are not in the store ({lacking[0].fallback}; its TTL ends "
                f"{dt.datetime.fromtimestamp(manifest.expires_at, dt.UTC):%Y-%m-%d %H:%M} UTC): rerun the "
                "batch_score of its run to score it again"
            )
        got = np.asarray([np.nan if a.score is None else a.score for a in answers])
        if not np.allclose(got, expected, rtol=0, atol=1e-12):
            raise KeikoError(f"lookups differ from the batch's scores by {np.nanmax(np.abs(got - expected)):.3g}")
        self._record(POINTER, "checked", version, f"{len(keys)} keys answer as the batch scored them")

    def roll_back(self, previous: int | None, *, expected: int | None = None) -> bool:
        """The pointer back to `previous`'s batch (None: no batch), from `expected` (default: what it names now)."""
        self.guard()
        current = self.serving() if expected is None else expected
        try:
            self.store.switch(self.model, previous, expected=current)
        except KeikoError as exc:
            self._record(POINTER, "rollback failed", previous, str(exc))
            return False
        self._record(POINTER, "rolled back", previous)
        return True

    def canary(self) -> int | None:
        return None  # a batch is switched whole: no canary

    def split(self, split: TrafficSplit, stable: int) -> list[RolloutEvent]:
        raise RolloutFailed(
            f"{self.model} is served from batches: it deploys by switching its batch, never as a canary",
            events=self.events,
            rolled_back=True,
        )
