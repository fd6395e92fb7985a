"""The scanner's run history, from the run reports it writes (`runs/date=YYYY-MM-DD/run=<run id>.json`), as a
table and as a PNG of the series the CloudWatch dashboard shows: for people without console access, and for
history older than CloudWatch keeps.

The DLQ depth is the one dashboard series not here: it lives in SQS, not in the reports.
"""
from __future__ import annotations

import datetime as dt
import json
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from handler.publish.s3 import report_key

RUNS_PREFIX = report_key("", "").split("date=")[0]  # "runs/": the layout is handler/publish/s3.py's


class ReportError(Exception):
    """Raised when the run reports cannot be listed or read, or there are none in the period asked."""


@dataclass(frozen=True)
class RunPoint:
    """One run, reduced to the dashboard's series."""

    started_at: dt.datetime
    run_id: str
    clusters_scanned: int
    clusters_failed: int
    namespaces_failing: int
    findings_imported: int
    findings_rejected: int
    seconds: float
    failing_by_account: dict[str, int] = field(default_factory=dict)

    @classmethod
    def from_report(cls, report: dict[str, Any]) -> RunPoint:
        summary = report["summary"]
        by_account: dict[str, int] = defaultdict(int)
        for cluster in report.get("clusters", []):
            if cluster.get("result") == "scanned":
                by_account[cluster["account_id"]] += cluster.get("namespaces_failing", 0)
        return cls(started_at=dt.datetime.fromisoformat(report["started_at"].replace("Z", "+00:00")),
                   run_id=report["run_id"], clusters_scanned=summary["clusters_scanned"],
                   clusters_failed=summary["clusters_failed"], namespaces_failing=summary["namespaces_failing"],
                   findings_imported=summary["findings_imported"], findings_rejected=summary["findings_rejected"],
                   seconds=float(summary["seconds"]), failing_by_account=dict(by_account))


class Source(Protocol):
    def keys(self, since: str) -> Iterator[str]: ...  # report keys whose date is `since` or later

    def read(self, key: str) -> bytes: ...

    def describe(self) -> str: ...


class BucketSource:
    def __init__(self, bucket: str, s3_client: Any = None) -> None:
        import boto3

        self.bucket = bucket
        self._s3 = s3_client or boto3.client("s3")

    def keys(self, since: str) -> Iterator[str]:
        # Keys sort by date: start listing at the first day wanted instead of reading all history.
        pages = self._s3.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=RUNS_PREFIX, StartAfter=f"{RUNS_PREFIX}date={since}")
        for page in pages:
            yield from (obj["Key"] for obj in page.get("Contents", []))

    def read(self, key: str) -> bytes:
        return self._s3.get_object(Bucket=self.bucket, Key=key)["Body"].read()

    def describe(self) -> str:
        return f"s3://{self.bucket}/{RUNS_PREFIX}"


class DirectorySource:
    def __init__(self, root: Path) -> None:
        self.root = root

    def keys(self, since: str) -> Iterator[str]:
        for path in sorted((self.root / RUNS_PREFIX).glob("date=*/run=*.json")):
            key = path.relative_to(self.root).as_posix()
            if key >= f"{RUNS_PREFIX}date={since}":
                yield key

    def read(self, key: str) -> bytes:
        return (self.root / key).read_bytes()

    def describe(self) -> str:
        return str(self.root / RUNS_PREFIX)


def source(bucket: str | None, directory: Path | None) -> Source:
    if directory is not None:
        if not (directory / RUNS_PREFIX).is_dir():
            raise ReportError(f"{directory} holds no {RUNS_PREFIX} folder (a copy of the report bucket: "
                              f"aws s3 sync s3://BUCKET/{RUNS_PREFIX} {directory}/{RUNS_PREFIX})")
        return DirectorySource(directory)
    return BucketSource(str(bucket))


def load_runs(src: Source, days: int, today: dt.date | None = None) -> list[RunPoint]:
    """The runs of the last `days` days, oldest first. Dry runs write no report, so they are not here."""
    since = ((today or dt.datetime.now(dt.timezone.utc).date()) - dt.timedelta(days=days - 1)).isoformat()
    from botocore.exceptions import BotoCoreError, ClientError

    runs = []
    try:
        for key in src.keys(since):
            if key.endswith(".json"):
                runs.append(_point(key, src.read(key)))
    except (ClientError, BotoCoreError, OSError) as error:
        raise ReportError(f"cannot read the run reports in {src.describe()}: {error}") from error
    if not runs:
        raise ReportError(f"no run reports in {src.describe()} since {since}")
    return sorted(runs, key=lambda r: r.started_at)


def _point(key: str, body: bytes) -> RunPoint:
    try:
        return RunPoint.from_report(json.loads(body))
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise ReportError(f"{key} is not a run report: {error!r}") from error


def table(runs: list[RunPoint]) -> str:
    rows = [("started (UTC)", "run", "scanned", "failed", "ns failing", "imported", "rejected", "seconds")]
    rows += [(f"{r.started_at:%Y-%m-%d %H:%M}", r.run_id, str(r.clusters_scanned), str(r.clusters_failed),
              str(r.namespaces_failing), str(r.findings_imported), str(r.findings_rejected), f"{r.seconds:.1f}")
             for r in runs]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.rjust(w) if i > 1 else cell.ljust(w) for i, (cell, w)
                               in enumerate(zip(row, widths))).rstrip() for row in rows)


def plot(runs: list[RunPoint], path: Path) -> None:
    """Four panels, as on the dashboard: failing namespaces by account, clusters scanned and failed, findings
    imported and rejected, run duration."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on a server or in CI
    import matplotlib.pyplot as plt
    from matplotlib import dates, ticker

    times = [r.started_at for r in runs]
    figure, axes = plt.subplots(2, 2, figsize=(12, 8), dpi=100, sharex=True)
    accounts = sorted({a for r in runs for a in r.failing_by_account})
    for account in accounts:
        axes[0][0].plot(times, [r.failing_by_account.get(account, 0) for r in runs], marker="o", label=account)
    _panel(axes[0][0], "Failing namespaces by account", legend=bool(accounts))
    _series(axes[0][1], times, {"scanned": [r.clusters_scanned for r in runs],
                                "failed": [r.clusters_failed for r in runs]}, "Clusters")
    _series(axes[1][0], times, {"imported": [r.findings_imported for r in runs],
                                "rejected": [r.findings_rejected for r in runs]}, "Findings")
    _series(axes[1][1], times, {"seconds": [r.seconds for r in runs]}, "Run duration (s)")
    for axis in (axes[0][0], axes[0][1], axes[1][0]):
        axis.yaxis.set_major_locator(ticker.MaxNLocator(integer=True))  # counts
    locator = dates.AutoDateLocator()
    axes[1][0].xaxis.set_major_locator(locator)
    axes[1][0].xaxis.set_major_formatter(dates.ConciseDateFormatter(locator))
    figure.suptitle(f"eks-netpol-scanner: {len(runs)} run(s), {times[0]:%Y-%m-%d} to {times[-1]:%Y-%m-%d}")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png")
    plt.close(figure)


def _series(axis: Any, times: list[dt.datetime], series: dict[str, list[float]], title: str) -> None:
    for label, values in series.items():
        axis.plot(times, values, marker="o", label=label)
    _panel(axis, title, legend=True)


def _panel(axis: Any, title: str, legend: bool) -> None:
    axis.set_title(title)
    axis.set_ylim(bottom=0)
    axis.grid(alpha=0.3)
    if legend:
        axis.legend(loc="upper left", fontsize="small")
