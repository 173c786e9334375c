"""WarehousePartitionsTrigger: waits in Airflow's triggerer until every `table/dt=day` partition of a data window is
in the warehouse, or its deadline passes.

Written here because no provider trigger does it: FileTrigger and the Glue partition trigger wait for one path or
for any partition matching an expression, not for every day of a window (and not for Athena's projected
partitions), and one sensor task per partition would be 16 tasks for an 8-day window of two tables.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent


class WarehousePartitionsTrigger(BaseTrigger):
    """Fires {"status": "present"} once every partition of `tables` x `first`..`last` exists, or {"status":
    "timeout", "missing": [...]} at `deadline` (ISO 8601, UTC). Checks every `poke_seconds`, logging what it still
    waits for whenever that changes and once an hour otherwise."""

    def __init__(self, *, tables: list[str], first: str, last: str, deadline: str, poke_seconds: float) -> None:
        super().__init__()
        self.tables, self.first, self.last = sorted(tables), first, last
        self.deadline, self.poke_seconds = deadline, poke_seconds

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "tables": self.tables,
                "first": self.first,
                "last": self.last,
                "deadline": self.deadline,
                "poke_seconds": self.poke_seconds,
            },
        )

    def missing(self) -> list[str]:
        """Blocking (Glue calls, a directory walk): run in a thread, off the triggerer's event loop."""
        from keiko.config import settings
        from keiko.warehouse import days_between, open_warehouse

        days = days_between(dt.date.fromisoformat(self.first), dt.date.fromisoformat(self.last))
        return open_warehouse(settings()).missing_partitions(set(self.tables), days)

    async def run(self) -> AsyncIterator[TriggerEvent]:
        from asgiref.sync import sync_to_async  # what Airflow asks triggers to call blocking code (hooks) through

        from keiko.warehouse import describe_partitions

        deadline = dt.datetime.fromisoformat(self.deadline)
        logged, logged_at = None, 0.0
        while True:
            missing = await sync_to_async(self.missing)()
            if not missing:
                self.log.info("every partition of %s for %s..%s is in", ", ".join(self.tables), self.first, self.last)
                yield TriggerEvent({"status": "present"})
                return
            now = dt.datetime.now(dt.UTC)
            if now >= deadline:
                yield TriggerEvent({"status": "timeout", "missing": missing})
                return
            loop_time = asyncio.get_running_loop().time()
            if missing != logged or loop_time - logged_at >= 3600:
                self.log.info("waiting for partitions %s (%d missing)", describe_partitions(missing), len(missing))
                logged, logged_at = missing, loop_time
            await asyncio.sleep(min(self.poke_seconds, (deadline - now).total_seconds()))
