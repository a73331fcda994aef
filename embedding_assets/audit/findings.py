"""What a store audit found, kept beside the shard state: its summary per mode, the ids to
repair, and when documents were first found gone.

The checks (defs/checks.py), the repair sensor, the metrics endpoint and the CLI all read these
findings, so the UI, Prometheus and the repairs describe one thing: the store, not the run that
last wrote it (audit/store.py makes them).
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import asdict, dataclass, field

import polars as pl
from upath import UPath

from embedding_assets import settings
from embedding_assets.lib import audit

MODES = ("sampled", "full")
DOCUMENTS = "documents"  # a delta run's own documents (not a store-wide mode: never saved)
VALIDITY_SAMPLE = 500  # entries decoded as clients decode them
RECHECK_LIMIT = 500  # sampled documents whose entry looks wrong, refetched with all their copies
EXTRA_SAMPLE = 1000  # entries a sampled audit looks up for their document (bound: 0.4% at 95%)
SCAN_BATCH = 50_000
STALE_LIMIT = 0.01  # the promise: under 1% of entries older than their document or 24 h
SAMPLE_LIMIT = 10  # ids shown per finding in metadata


@dataclass
class Findings:
    """What an audit found; ids are complete in full mode, the sampled ones otherwise."""

    version: str | None
    mode: str
    at: int  # the feature store's clock, seconds
    seconds: float = 0.0
    population: int = 0  # documents in the collection (with text, in full mode)
    examined: int = 0  # documents with text examined
    entries_examined: int = 0  # entries examined for extras
    entries_total: int = 0  # entries of the version (full mode: counted; sampled: estimated)
    missing: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)
    stale: list[str] = field(default_factory=list)  # present, older than their document or 24 h
    older_than_document: int = 0
    older_than_24h: int = 0
    extra: list[str] = field(default_factory=list)
    ages: dict[str, float] = field(default_factory=dict)
    failed: int = 0
    with_text: int = 0  # denominator of the failed ratio
    vectors_checked: int = 0
    invalid_vectors: list[str] = field(default_factory=list)
    control_problems: list[str] = field(default_factory=list)
    bytes_per_entry: float = 0.0
    in_flight: int = 0  # documents changed within the grace window: not judged yet
    # entries whose document was found gone less than the grace ago: not judged yet, but
    # repaired at once (the repair run reads the source, so it removes them only if their
    # documents are still gone; a deletion in flight is harmless)
    extra_in_flight: list[str] = field(default_factory=list)

    # -- ratios, 0..1 ------------------------------------------------------------------------
    @property
    def covered(self) -> int:
        return self.examined - len(self.missing) - len(self.mismatched)

    @property
    def coverage_ratio(self) -> float:
        return self.covered / self.examined if self.examined else (0.0 if self.control_problems else 1.0)

    @property
    def present(self) -> int:
        return self.examined - len(self.missing)

    @property
    def stale_ratio(self) -> float:
        return len(self.stale) / self.present if self.present else 0.0

    @property
    def extra_ratio(self) -> float:
        return len(self.extra) / self.entries_examined if self.entries_examined else 0.0

    @property
    def failed_ratio(self) -> float:
        return self.failed / self.with_text if self.with_text else 0.0

    def bound(self, found: int, examined: int) -> float:
        """The 95% upper bound on the store's share (full mode: the share itself)."""
        if self.mode == "full":
            return found / examined if examined else 0.0
        return audit.upper_bound(found, examined)

    def repairs(self) -> list[str]:
        """Documents whose entry must be rewritten or removed: what the repair sensor sends."""
        wrong = set(self.missing) | set(self.mismatched) | set(self.stale) | set(self.extra)
        return sorted(wrong | set(self.extra_in_flight))

    # -- as checks -----------------------------------------------------------------------------
    def outcomes(self, max_error_rate: float) -> dict[str, audit.Outcome]:
        scope = {"mode": self.mode, "version": self.version or "none", "audited_at": self.at}
        wrong = len(self.missing) + len(self.mismatched)
        how = f"{self.examined} documents" + (" sampled" if self.mode == "sampled" else "")
        return {
            "coverage": audit.Outcome(
                wrong == 0 and not self.control_problems,
                f"{self.covered}/{self.examined} covered, {len(self.missing)} missing, "
                f"{len(self.mismatched)} mismatched ({how}; store-wide, active version)"
                + (f"; {self.in_flight} changed too recently to judge" if self.in_flight else ""),
                {
                    **scope,
                    "documents": self.population,
                    "examined": self.examined,
                    "covered": self.covered,
                    "missing": len(self.missing),
                    "mismatched": len(self.mismatched),
                    "in_flight": self.in_flight,
                    "coverage_ratio": self.coverage_ratio,
                    "uncovered_upper_bound_95": self.bound(wrong, self.examined),
                    "missing_sample": self.missing[:SAMPLE_LIMIT],
                    "mismatched_sample": self.mismatched[:SAMPLE_LIMIT],
                },
            ),
            "staleness": audit.Outcome(
                self.stale_ratio < STALE_LIMIT,
                f"{len(self.stale)} of {self.present} entries older than their document or "
                f"{int(settings.get('EA_STALE_SECONDS')) / 3600:g} h "
                f"({self.stale_ratio:.3%}; limit {STALE_LIMIT:.0%}); age p50 "
                f"{self.ages.get('p50', 0) / 3600:.1f} h, p99 {self.ages.get('p99', 0) / 3600:.1f} h",
                {
                    **scope,
                    "entries": self.present,
                    "stale": len(self.stale),
                    "older_than_document": self.older_than_document,
                    "older_than_24h": self.older_than_24h,
                    "stale_ratio": self.stale_ratio,
                    "stale_upper_bound_95": self.bound(len(self.stale), self.present),
                    **{f"age_{k}_seconds": v for k, v in self.ages.items()},
                    "sample": self.stale[:SAMPLE_LIMIT],
                },
            ),
            "orphans": audit.Outcome(
                not self.extra,
                f"{len(self.extra)} of {self.entries_examined} entries examined belong to no live document"
                + (
                    f"; {len(self.extra_in_flight)} more of documents deleted too recently to judge"
                    if self.extra_in_flight
                    else ""
                ),
                {
                    **scope,
                    "entries": self.entries_total,
                    "examined": self.entries_examined,
                    "orphans": len(self.extra),
                    "deletions_in_flight": len(self.extra_in_flight),
                    "orphan_upper_bound_95": self.bound(len(self.extra), self.entries_examined),
                    "sample": self.extra[:SAMPLE_LIMIT],
                },
            ),
            "failed_documents": audit.Outcome(
                self.failed_ratio <= max_error_rate,
                f"{self.failed} of {self.with_text} documents failed after retries "
                f"({self.failed_ratio:.4%}; limit {max_error_rate:.2%})",
                {
                    **scope,
                    "failed": self.failed,
                    "documents": self.with_text,
                    "failed_ratio": self.failed_ratio,
                },
            ),
            "entry_validity": audit.Outcome(
                not self.invalid_vectors,
                f"{len(self.invalid_vectors)} of {self.vectors_checked} entries decoded as readers do "
                "are not valid vectors",
                {**scope, "checked": self.vectors_checked, "sample": self.invalid_vectors[:SAMPLE_LIMIT]},
            ),
            "control_plane": audit.Outcome(
                not self.control_problems,
                "; ".join(self.control_problems)
                or "active pointer, version, layout and calibration present and equal to the copy",
                {**scope, "problems": len(self.control_problems)},
            ),
        }

    # -- kept beside the shard state, for the repair sensor and the metrics -----------------------
    def save(self, folder: str | UPath, max_error_rate: float) -> None:
        """The summary (with each check's outcome, which delta runs carry), and the repairs."""
        base = UPath(folder)
        base.mkdir(parents=True, exist_ok=True)
        # two audits can end in the same second (a scheduled one and one a restart asked for):
        # each has its own id and repairs, or the repair sensor takes the second for the first
        audit_id = f"{self.at}-{uuid.uuid4().hex[:8]}"
        pl.DataFrame({"doc_id": self.repairs()}, schema={"doc_id": pl.String}).write_parquet(
            str(base / f"repairs-{audit_id}.parquet")
        )
        summary = {k: v for k, v in asdict(self).items() if not isinstance(v, list)}
        summary |= {k: len(v) for k, v in asdict(self).items() if isinstance(v, list)}
        if self.mode == DOCUMENTS:
            raise ValueError("a delta run's audit of its own documents is not a store-wide finding")
        summary |= {
            "coverage_ratio": self.coverage_ratio,
            "stale_ratio": self.stale_ratio,
            "extra_ratio": self.extra_ratio,
            "failed_ratio": self.failed_ratio,
            "id": audit_id,
            "repairs_file": f"repairs-{audit_id}.parquet",
            "checks": {
                name: {"passed": o.passed, "description": o.description}
                for name, o in self.outcomes(max_error_rate).items()
            },
        }
        for name in ("latest.json", f"latest-{self.mode}.json"):
            tmp = base / f".{name}.{time.time_ns()}.tmp"
            tmp.write_text(json.dumps(summary))
            tmp.rename(base / name)
        for old in base.glob("repairs-*.parquet"):  # the last few stay for the sensor
            if old.name != summary["repairs_file"] and time.time() - old.stat().st_mtime > 3600:
                old.unlink(missing_ok=True)


def latest(folder: str | UPath, mode: str | None = None) -> dict | None:
    """The summary of the last audit (of ``mode``, if given) saved under ``folder``."""
    path = UPath(folder) / ("latest.json" if mode is None else f"latest-{mode}.json")
    return json.loads(path.read_text()) if path.exists() else None


def repairs_of(folder: str | UPath, summary: dict) -> list[str]:
    path = UPath(folder) / summary["repairs_file"]
    return pl.read_parquet(str(path))["doc_id"].to_list() if path.exists() else []


def load_gone_since(folder: str | UPath) -> dict[str, int]:
    path = UPath(folder) / "gone-since.json"
    return {str(k): int(v) for k, v in json.loads(path.read_text()).items()} if path.exists() else {}


def save_gone_since(folder: str | UPath, gone_since: dict[str, int]) -> None:
    base = UPath(folder)
    base.mkdir(parents=True, exist_ok=True)
    (base / "gone-since.json").write_text(json.dumps(gone_since))
