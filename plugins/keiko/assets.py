"""The model's production as an Airflow Asset: updated whenever a run moves it.

The tasks that may move production (keiko.dag_factory.PRODUCTION_CHANGERS) name an AssetAlias as their outlet, and
their operator adds an event of the Asset through it only when the step's result says production moved
(`production_moved`): a canary's start, a deploy of the version already serving, a rollback that only ended a canary
move nothing, and a DAG scheduled on the Asset must not run for them.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import Asset, AssetAlias


def production_asset(model: str) -> Asset:
    """Its event's extra: the step's result, with the version; a DAG with `schedule=Asset("keiko://ctr/production")`
    runs after each move. Named by its URI, as that spelling names it: an asset of the same URI under another name
    would be another asset, and Airflow keeps only one."""
    return Asset(f"keiko://{model}/production")


def production_alias(model: str) -> AssetAlias:
    return AssetAlias(f"keiko-{model}-production-moves")


def publish_if_moved(context: Any, outlets: list[Any], model: str, returned: dict[str, Any] | None) -> None:
    """An event of `model`'s production Asset through each alias outlet, if the step moved production."""
    if not (returned and returned.get("production_moved")):
        return
    for outlet in outlets:
        if isinstance(outlet, AssetAlias):
            context["outlet_events"][outlet].add(production_asset(model), extra=returned)
