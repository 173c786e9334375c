"""gate_online: each serving version's accuracy on the day's live traffic against its own offline evaluation.

Per version with at least monitor.min_rows answered rows: online logloss, AUC and calibration (sum of scores /
sum of outcomes) from keiko.metrics, the same code as evaluate, and their gaps to the version's test-day figures
in the registry. A gap is noise as well as change: the thresholds in model.yaml say what clean days showed.
"""

from __future__ import annotations

import pandas as pd

from keiko.contract import JoinOutcomesResult, Metrics, OnlineGateResult, VersionOnline
from keiko.gates.runner import Validation, report, run_validations
from keiko.metrics import summary
from keiko.stages.context import StageContext
from keiko.stages.join_outcomes import OUTCOME, SCORE, VERSION


def offline_metrics(ctx: StageContext, version: int) -> Metrics | None:
    test = ctx.registry.get(ctx.model.name, version).metrics.get("test")
    return Metrics(**test) if test else None


def version_online(online: pd.DataFrame, version: int, offline: Metrics | None, min_rows: int) -> VersionOnline:
    rows = online[online[VERSION] == version]
    figures = Metrics(**summary(rows[OUTCOME].to_numpy(), rows[SCORE].to_numpy()))
    return VersionOnline(
        version=version,
        online=figures,
        offline=offline,
        logloss_gap=figures.logloss / offline.logloss - 1 if offline and offline.logloss else None,
        auc_drop=offline.auc - figures.auc if offline else None,
        judged=figures.rows >= min_rows,
    )


def run(ctx: StageContext) -> OnlineGateResult:
    import great_expectations.expectations as gxe

    config = ctx.model.config.monitor
    joined = ctx.result(JoinOutcomesResult)
    online = ctx.store.read_table(joined.online_uri, columns=[VERSION, SCORE, OUTCOME]).to_pandas().dropna()
    versions = {}
    for version in sorted(int(v) for v in joined.versions):
        versions[str(version)] = figures = version_online(
            online, version, offline_metrics(ctx, version), config.min_rows
        )
        if not figures.judged:
            ctx.log(f"gate_online: v{version} answered {figures.online.rows:,} rows < min_rows {config.min_rows}")
    validations = []
    for key, figures in versions.items():
        if not figures.judged:
            continue
        facts = {"calibration": figures.online.calibration}
        expectations = [
            gxe.ExpectColumnValuesToBeBetween(
                column="calibration",
                min_value=1 - config.calibration_tolerance,
                max_value=1 + config.calibration_tolerance,
            )
        ]
        if figures.offline:
            facts |= {"logloss_gap": figures.logloss_gap, "auc_drop": figures.auc_drop}
            expectations += [
                gxe.ExpectColumnValuesToBeBetween(column="logloss_gap", max_value=config.max_logloss_gap),
                gxe.ExpectColumnValuesToBeBetween(column="auc_drop", max_value=config.max_auc_drop),
            ]
        validations.append(Validation("online", pd.DataFrame([facts]), expectations, partition=f"v{key}"))
    outcomes = run_validations(ctx, "online", validations)
    described = "; ".join(
        f"v{k} logloss {f.online.logloss:.5f}"
        + (f" (offline {f.offline.logloss:.5f}, {f.logloss_gap:+.1%})" if f.offline else "")
        + f", AUC {f.online.auc:.4f}, calibration {f.online.calibration:.3f} on {f.online.rows:,} rows"
        for k, f in versions.items()
    )
    return report(ctx, OnlineGateResult, outcomes, described or "no answers", day=joined.day, versions=versions)
