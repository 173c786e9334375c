"""The I/O every command works through: the artifact store, the registry and the warehouse, from the settings.

Each is made on first use (a stage that never queries the warehouse never imports DuckDB), once per
process. A step gets them through its StageContext; commands without a run day (`keiko rollback`,
`keiko status`) use them directly.
"""

from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING

from keiko.config import Settings, settings
from keiko.storage import ArtifactStore, open_store

if TYPE_CHECKING:  # imported where used: not every step needs SQLAlchemy or DuckDB
    from keiko.batch_store import BatchStore
    from keiko.registry import Registry
    from keiko.warehouse import Warehouse


class Resources:
    def __init__(self, config: Settings | None = None) -> None:
        self.settings = config or settings()

    @cached_property
    def store(self) -> ArtifactStore:
        return open_store(self.settings)

    @cached_property
    def registry(self) -> Registry:
        from keiko.registry import open_registry

        return open_registry(self.settings.registry_url)

    @cached_property
    def batch_store(self) -> BatchStore:
        from keiko.batch_store import open_batch_store

        return open_batch_store(self.settings.batch_store_url)

    @cached_property
    def warehouse(self) -> Warehouse:
        from keiko.warehouse import open_warehouse

        return open_warehouse(self.settings)
