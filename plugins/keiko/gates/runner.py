"""Runs Great Expectations suites on in-memory frames and reports them for people and machines.

Each gate builds real `ExpectationSuite`s, validates them on pandas frames through an ephemeral
data context, renders Data Docs next to the run's artifacts when an expectation failed, and prints a
compact table of every failed expectation (suite, expectation, column, observed, expected) followed by a
one-line verdict.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pandas as pd

from keiko import phases
from keiko.contract import GateOutcome, GateResult
from keiko.errors import GateFailed, ModelConfigError
from keiko.gates import data_docs
from keiko.pipeline import STEPS, task_id
from keiko.stages.context import StageContext

G = TypeVar("G", bound=GateResult)


@dataclass
class Validation:
    """One frame and the expectations it must meet (one GE suite)."""

    name: str
    frame: pd.DataFrame
    expectations: list[Any]
    index_column: str | None = None  # names the failing rows in the log, e.g. "dt" for daily aggregates
    partition: str = ""  # which part of the data the suite ran on, e.g. "dt=2026-11-21" of a source table

    @property
    def label(self) -> str:
        """The suite as the gate table names it: with its partition, when it ran on one."""
        return f"{self.name} {self.partition}" if self.partition else self.name


def _short(value: Any, limit: int = 48) -> str:
    if isinstance(value, float):
        text = f"{value:.6g}"
    elif isinstance(value, (list, tuple, set)):
        items = sorted(map(str, value))
        text = "{" + ", ".join(items[:6]) + (f", ... {len(items)} values" if len(items) > 6 else "") + "}"
    else:
        text = str(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float, np.number)) and not isinstance(value, bool) else None


def _fact(result: Any, validation: Validation) -> Any:
    """The judged value when the frame is a one-row table of facts (gate_training's, the blessing's)."""
    column = result.expectation_config.kwargs.get("column")
    if len(validation.frame) == 1 and column in validation.frame.columns:
        return validation.frame[column].iloc[0]
    return None


def _observed_number(result: Any, validation: Validation) -> float | None:
    """GE's numeric observed value, or the fact judged (for headroom reports)."""
    fact = _fact(result, validation)
    return _number(fact if fact is not None else (result.result or {}).get("observed_value"))


# What expectations without bounds or sets require, in words.
PLAIN_EXPECTED = {
    "expect_column_values_to_not_be_null": "no nulls",
    "expect_column_values_to_be_unique": "unique",
    "expect_column_to_exist": "present",
}


def describe_expected(expectation: str, kwargs: dict[str, Any]) -> str:
    parts = []
    if "min_value" in kwargs or "max_value" in kwargs:
        low, high = kwargs.get("min_value"), kwargs.get("max_value")
        parts.append(f"[{_short(low) if low is not None else '-inf'}, {_short(high) if high is not None else 'inf'}]")
    for key, label in (("value_set", "in "), ("type_list", "type in "), ("threshold", "< ")):
        if kwargs.get(key) is not None:
            parts.append(label + _short(kwargs[key]))
    if kwargs.get("mostly", 1) < 1:
        parts.append(f"mostly {kwargs['mostly']:.0%}")
    return " ".join(parts) or PLAIN_EXPECTED.get(expectation, "true")


def describe_observed(result: Any, validation: Validation) -> str:
    if result.exception_info and result.exception_info.get("raised_exception"):
        return "error: " + _short(result.exception_info.get("exception_message", ""), 60)
    data = result.result or {}
    if data.get("observed_value") is not None:
        return _short(data["observed_value"])
    if (fact := _fact(result, validation)) is not None:
        return _short(fact)
    column = result.expectation_config.kwargs.get("column")
    if validation.index_column and data.get("partial_unexpected_index_list"):
        examples = [
            f"{row[validation.index_column]}: {_short(row[column])}" for row in data["partial_unexpected_index_list"]
        ]
        return f"{data.get('unexpected_count', 0)} unexpected: " + ", ".join(examples[:3])
    if "unexpected_percent" in data:
        values = [v for v in data.get("partial_unexpected_list") or [] if not pd.isna(v)]
        examples = list(dict.fromkeys(map(_short, values)))[:3]
        count, share = data.get("unexpected_count") or 0, data.get("unexpected_percent") or 0.0
        what = "null" if result.expectation_config.type == "expect_column_values_to_not_be_null" else "unexpected"
        return f"{count:,} {what} ({share:.3g}%)" + (f", e.g. {', '.join(examples)}" if examples else "")
    if data.get("details"):
        return _short(data["details"])
    return "missing" if not result.success else "ok"


def format_table(outcomes: list[GateOutcome]) -> str:
    headers = ("suite", "expectation", "column", "observed", "expected")
    rows = [(o.suite, o.expectation.removeprefix("expect_"), o.column, o.observed, o.expected) for o in outcomes]
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))
    body = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    return "\n".join([line.rstrip(), "  ".join("-" * w for w in widths), *body])


def _quiet_great_expectations() -> None:
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
    logging.getLogger("great_expectations").setLevel(logging.ERROR)


def model_expectations(ctx: StageContext, gate: str, suites: list[str]) -> dict[str, list[Any]]:
    """A model's own expectations per suite, from its folder (ModelDefinition.expectation_files).

    The files use Great Expectations' suite JSON ({"expectations": [{"type": ..., "kwargs": ...}]}), so a
    suite exported from GE can be dropped in. A file for an unknown suite or a bad expectation is an error.
    """
    from great_expectations.expectations.expectation_configuration import ExpectationConfiguration

    extra: dict[str, list[Any]] = {}
    for suite, path in ctx.model.expectation_files(gate).items():
        if suite not in suites:
            raise ModelConfigError(
                f"{path}: {task_id('gate', gate)} has no suite {suite!r}; its suites: {', '.join(suites)}"
            )
        try:
            extra[suite] = [
                ExpectationConfiguration(
                    type=item["type"], kwargs=item.get("kwargs", {}), meta=item.get("meta")
                ).to_domain_obj()
                for item in json.loads(path.read_text())["expectations"]
            ]
        except Exception as exc:  # JSON, missing keys, unknown expectation, pydantic: all a broken file
            raise ModelConfigError(f"{path}: not a valid expectation suite: {type(exc).__name__}: {exc}") from None
    return extra


def _result_format(validation: Validation) -> dict[str, Any]:
    """BASIC (counts and a few unexpected values) is all the table needs; GE's SUMMARY also filters the
    whole frame twice per column expectation for the unexpected rows' index, which only the suites with an
    index column (one row per day) show."""
    if validation.index_column:
        return {"result_format": "SUMMARY", "unexpected_index_column_names": [validation.index_column]}
    return {"result_format": "BASIC"}


def _outcomes(result: Any, validation: Validation) -> list[GateOutcome]:
    outcomes = []
    for item in result.results:
        config = item.expectation_config
        outcomes.append(
            GateOutcome(
                suite=validation.label,
                expectation=config.type,
                column=str(config.kwargs.get("column") or ",".join(config.kwargs.get("column_list", [])) or "-"),
                observed=describe_observed(item, validation),
                expected=describe_expected(config.type, config.kwargs),
                passed=bool(item.success),
                value=_observed_number(item, validation),
            )
        )
    return outcomes


def _write_data_docs(ctx: StageContext, context: Any, site: str) -> None:
    """Render the context's validation results as a Data Docs site and copy it to `site` in the store."""
    with tempfile.TemporaryDirectory(prefix="keiko-gx-") as docs_dir:
        context.add_data_docs_site(
            "run",
            {
                "class_name": "SiteBuilder",
                "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": docs_dir},
                "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
            },
        )
        context.build_data_docs(site_names=["run"])
        # GE's pages load their CSS and JavaScript from CDNs: point them at packaged copies, for clusters
        # without the internet (keiko.gates.data_docs).
        if remote := data_docs.localize(Path(docs_dir)):
            ctx.log(f"Data Docs still load {len(remote)} files from the internet (not packaged): {', '.join(remote)}")
        for path in sorted(Path(docs_dir).rglob("*")):
            if path.is_file():
                ctx.store.write_bytes(f"{site}/{path.relative_to(docs_dir).as_posix()}", path.read_bytes())


def wants_data_docs(outcomes: list[GateOutcome]) -> bool:
    """Data Docs are for a gate that failed (on-call opens them then)."""
    return not all(o.passed for o in outcomes)


def run_validations(
    ctx: StageContext, gate: str, validations: Iterable[Validation], extra: dict[str, list[Any]] | None = None
) -> list[GateOutcome]:
    """Validate every frame with its suite (plus the model's own expectations for it, `extra`: by default
    read for the suites given). `validations` may be a generator: each frame is then read when it is
    validated and freed after.

    Data Docs are rendered only when an expectation failed (RunLayout.data_docs): that is when on-call
    opens them, and a passed gate's result file already lists every expectation, observed and expected.
    An earlier run's site is removed first, so it cannot pass for this run's."""
    _quiet_great_expectations()
    site = ctx.layout.data_docs(task_id("gate", gate))
    ctx.store.delete(site, recursive=True)
    if extra is None:
        validations = list(validations)
        extra = model_expectations(ctx, gate, [v.name for v in validations])
    with phases.phase("validate"):
        import great_expectations as gx
        from great_expectations.data_context.types.base import ProgressBarsConfig

        context = gx.get_context(mode="ephemeral")
        context.variables.progress_bars = ProgressBarsConfig(globally=False)
        source = context.data_sources.add_pandas(f"{ctx.model.name}-{ctx.ds}")
        outcomes: list[GateOutcome] = []
        for validation in validations:
            suite_name = f"{ctx.model.name}.{gate}.{validation.label.replace(' ', '.')}"
            # A suite that runs on several partitions takes the model's expectations each time: copies, as
            # GE lets an expectation belong to one suite only.
            expectations = [*validation.expectations, *map(copy.copy, extra.get(validation.name, []))]
            suite = context.suites.add(gx.ExpectationSuite(name=suite_name, expectations=expectations))
            batch = source.add_dataframe_asset(validation.label).add_batch_definition_whole_dataframe("run")
            definition = context.validation_definitions.add(
                gx.ValidationDefinition(name=suite_name, data=batch, suite=suite)
            )
            result = definition.run(
                batch_parameters={"dataframe": validation.frame}, result_format=_result_format(validation)
            )
            outcomes += _outcomes(result, validation)
    if wants_data_docs(outcomes):
        with phases.phase("data docs"):
            _write_data_docs(ctx, context, site)
    return outcomes


def report(ctx: StageContext, kind: type[G], outcomes: list[GateOutcome], summary: str, **facts: Any) -> G:
    """The gate's result, written to its result file; prints the verdict and raises GateFailed when anything
    failed (the result file holds the failed verdict then: the step runner rewrites it only on success)."""
    task = kind.TASK
    failed = [o for o in outcomes if not o.passed]
    docs = ctx.layout.data_docs_index(task) if wants_data_docs(outcomes) else ""  # as run_validations rendered
    with phases.phase("write"):
        result = kind(
            gate=STEPS[task].name,
            success=not failed,
            expectations=len(outcomes),
            failed=len(failed),
            outcomes=outcomes,
            data_docs=docs,
            phases=phases.seconds(),
            **facts,
        )
        ctx.layout.write_result(result)
    if failed:
        print(f"\n{task} FAILED: {len(failed)} of {len(outcomes)} expectations\n", flush=True)
        print(format_table(failed), flush=True)
        print(f"\nData Docs: {docs}", flush=True)
        first = failed[0]
        raise GateFailed(
            f"{task} failed {len(failed)}/{len(outcomes)} expectations, first: {first.suite} "
            f"{first.expectation.removeprefix('expect_')} on {first.column}: observed {first.observed}, "
            f"expected {first.expected}"
        )
    ctx.log(f"{task} passed: {len(outcomes)} expectations, all passed; {summary}")
    return result
