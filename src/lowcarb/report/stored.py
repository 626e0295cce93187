"""Rebuild a run dict (what the report renders) from the run store."""

from __future__ import annotations

from typing import Any

from lowcarb.errors import ConfigError
from lowcarb.store.runstore import RunStore


def load_run(store: RunStore, run_id_or_prefix: str) -> dict[str, Any]:
    """The run as the runner wrote it: id, name, status, recipe, stage records, error."""
    record = store.get_run(run_id_or_prefix)
    if record.kind == "search" and record.artifacts_dir:
        raise ConfigError(
            f"run {record.run_id} is a search; its report is {record.artifacts_dir}/search.html "
            f"(and search.md); `lowcarb show {record.run_id}` lists its windows"
        )
    if record.kind != "recipe":
        raise ConfigError(
            f"run {record.run_id} is a {record.kind!r} run, not a recipe run; reports are for "
            f"`lowcarb run` runs (use `lowcarb show {record.run_id}` for this one)"
        )
    settings = record.settings or {}
    metrics = record.metrics or {}
    stages = [row["metrics"] for row in store.stage_results(record.run_id)]
    return {
        "id": record.run_id,
        "name": record.name,
        "kind": record.kind,
        "status": record.status,
        "started_at": record.started_at,
        "finished_at": record.ended_at,
        "source": settings.get("source", ""),
        "overrides": settings.get("overrides", []),
        "recipe": settings.get("recipe", {}),
        "stages": stages,
        "model": metrics.get("model"),
        "error": metrics.get("error"),
        "artifacts_dir": record.artifacts_dir,
    }
