"""The store audit's run config, apart from its checks (defs/audit.py imports the assets), so that
the publish can tell whether a sampled audit follows it in the run."""

import dagster as dg

from embedding_assets import settings

AUDIT_OP = "store_audit"


class AuditConfig(dg.Config):
    """``sampled`` (EA_AUDIT_SAMPLE documents, 95% bounds in the metadata) or ``full``."""

    mode: str = "sampled"
    sample_size: int = int(settings.get("EA_AUDIT_SAMPLE"))


def sampled_audit_follows(context: dg.AssetExecutionContext) -> int | None:
    """The sample size of the sampled store audit in this run's job, or None: none in the job
    (a subset without it), or a full one."""
    if not context.job_def.has_node_named(AUDIT_OP):
        return None
    ops = context.run.run_config.get("ops") or {}
    config = AuditConfig(**((ops.get(AUDIT_OP) or {}).get("config") or {}))
    return config.sample_size if config.mode == "sampled" and config.sample_size > 0 else None
