"""Settings from the environment and the scan request from the invocation event: the one place defaults live."""
from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from handler.errors import ConfigError, EventError

ORGANIZATION = "ORGANIZATION"
ACCOUNT_ID = re.compile(r"[0-9]{12}")
REGION = re.compile(r"[a-z]{2}(-[a-z]+)+-[0-9]{1,2}")
# Patterns are used with fullmatch: `$` would also accept a trailing newline.
# EKS cluster names: 1-100 characters, alphanumeric first, then alphanumerics, hyphens and underscores.
CLUSTER_NAME = re.compile(r"[0-9A-Za-z][A-Za-z0-9_-]{0,99}")
ROLE_NAME = re.compile(r"[A-Za-z0-9_+=,.@-]{1,64}")
BUCKET_NAME = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
# A run's id and start (run.report.Run.start): they name S3 keys, so a queue message's are checked like an event's.
RUN_ID = re.compile(r"[0-9]{8}T[0-9]{6}Z-[0-9a-f]{8}")
TIMESTAMP = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{3}Z")

DEFAULT_CLUSTER_CONCURRENCY = 8
DEFAULT_PAGE_SIZE = 500  # kube-apiserver's recommended chunk; the issue caps a page at 500
DEFAULT_CONNECT_TIMEOUT = 5.0
DEFAULT_READ_TIMEOUT = 30.0
DEFAULT_REFRESH_DAYS = 7  # well inside the 90 days after which Security Hub deletes a finding not updated
DEFAULT_FANOUT_THRESHOLD = 20
DEFAULT_MAX_RECEIVES = 3  # must equal the queue's redrive maxReceiveCount
DEFAULT_WORKERS_PER_ACCOUNT = 2
DEFAULT_RUN_DEADLINE_MINUTES = 360
# An annotation exemption must name its expiry, at most this far ahead: whoever can annotate a namespace can
# silence it, so never for ever (ANNOTATION_EXEMPTION_MAX_DAYS).
DEFAULT_ANNOTATION_EXEMPTION_MAX_DAYS = 90
# How long a failed fan-out task stays invisible before its next attempt, by attempt (the last figure for any
# later one): a FIFO message group waits while one of its messages is invisible, so minutes, not the queue's
# 5,400 s VisibilityTimeout.
RETRY_BACKOFF_SECONDS = (30, 120, 480)
FLEET_MODES = ("auto", "inline", "queue", "local")
DEFAULT_SERVICE_NAME = "eks-netpol-scanner"
DEFAULT_METRICS_NAMESPACE = "NetpolScanner"


@dataclass(frozen=True)
class Settings:
    """The function's configuration, read once per invocation from its environment."""

    report_bucket: str
    scan_role_name: str | None = None
    scan_role_external_id: str | None = None
    target_accounts: tuple[str, ...] = ()  # empty: the function's own account
    use_organization: bool = False
    target_regions: tuple[str, ...] = ()  # empty: the function's Region
    default_region: str = "us-east-1"
    cluster_concurrency: int = DEFAULT_CLUSTER_CONCURRENCY
    page_size: int = DEFAULT_PAGE_SIZE
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
    read_timeout: float = DEFAULT_READ_TIMEOUT
    refresh_days: int = DEFAULT_REFRESH_DAYS
    # Fan-out: "auto" queues when SCAN_QUEUE_URL is set and a run has more than fanout_threshold clusters;
    # "local" fans out through the worker's code in this process (no SQS: the sandbox and local checks).
    fleet_mode: str = "auto"
    scan_queue_url: str | None = None
    fanout_threshold: int = DEFAULT_FANOUT_THRESHOLD
    max_receives: int = DEFAULT_MAX_RECEIVES
    workers_per_account: int = DEFAULT_WORKERS_PER_ACCOUNT
    run_deadline_minutes: int = DEFAULT_RUN_DEADLINE_MINUTES
    networking_k8s_io_only: bool = False  # CIS_5_3_2_POLICY_KINDS=networking.k8s.io: the strict reading of 5.3.2
    exemptions_source: str | None = None  # EXEMPTIONS: ssm:/parameter/name or s3://bucket/key
    annotation_exemption_max_days: int = DEFAULT_ANNOTATION_EXEMPTION_MAX_DAYS

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        bucket = env.get("REPORT_BUCKET", "").strip()
        if not BUCKET_NAME.fullmatch(bucket):
            raise ConfigError(f"REPORT_BUCKET must name an S3 bucket, got {bucket!r}")
        accounts = _split(env.get("TARGET_ACCOUNTS", ""))
        use_organization = accounts == (ORGANIZATION,)
        if not use_organization:
            _require_all(accounts, ACCOUNT_ID, "TARGET_ACCOUNTS", ConfigError, "12-digit account ids or ORGANIZATION")
        regions = _split(env.get("TARGET_REGIONS", ""))
        _require_all(regions, REGION, "TARGET_REGIONS", ConfigError, "Region names")
        role = env.get("SCAN_ROLE_NAME", "").strip() or None
        if role and not ROLE_NAME.fullmatch(role):
            raise ConfigError(f"SCAN_ROLE_NAME is not an IAM role name: {role!r}")
        fleet_mode = env.get("FLEET_MODE", "").strip().lower() or "auto"
        if fleet_mode not in FLEET_MODES:
            raise ConfigError(f"FLEET_MODE must be one of {', '.join(FLEET_MODES)}, got {fleet_mode!r}")
        queue_url = env.get("SCAN_QUEUE_URL", "").strip() or None
        if fleet_mode == "queue" and not queue_url:
            raise ConfigError("FLEET_MODE is queue but SCAN_QUEUE_URL is not set")
        return cls(
            report_bucket=bucket,
            scan_role_name=role,
            scan_role_external_id=env.get("SCAN_ROLE_EXTERNAL_ID", "").strip() or None,
            target_accounts=() if use_organization else accounts,
            use_organization=use_organization,
            target_regions=regions,
            default_region=env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or "us-east-1",
            cluster_concurrency=_positive_int(env, "CLUSTER_CONCURRENCY", DEFAULT_CLUSTER_CONCURRENCY, 64),
            page_size=_positive_int(env, "K8S_PAGE_SIZE", DEFAULT_PAGE_SIZE, DEFAULT_PAGE_SIZE),
            refresh_days=_positive_int(env, "REFRESH_DAYS", DEFAULT_REFRESH_DAYS, 80),
            networking_k8s_io_only=_policy_kinds(env) == STRICT_POLICY_KINDS,
            exemptions_source=_exemptions_source(env),
            fleet_mode=fleet_mode,
            scan_queue_url=queue_url,
            fanout_threshold=_positive_int(env, "FANOUT_THRESHOLD", DEFAULT_FANOUT_THRESHOLD, 100_000),
            max_receives=_positive_int(env, "SCAN_MAX_RECEIVES", DEFAULT_MAX_RECEIVES, 1000),
            workers_per_account=_positive_int(env, "SECURITYHUB_WORKERS_PER_ACCOUNT", DEFAULT_WORKERS_PER_ACCOUNT, 10),
            run_deadline_minutes=_positive_int(env, "RUN_DEADLINE_MINUTES", DEFAULT_RUN_DEADLINE_MINUTES, 10_080),
            annotation_exemption_max_days=_positive_int(env, "ANNOTATION_EXEMPTION_MAX_DAYS",
                                                        DEFAULT_ANNOTATION_EXEMPTION_MAX_DAYS, 3650),
        )


@dataclass(frozen=True)
class ScanRequest:
    """What one invocation asks for. Empty tuples mean "everything the settings target"."""

    accounts: tuple[str, ...] = ()
    regions: tuple[str, ...] = ()
    clusters: tuple[str, ...] = ()
    dry_run: bool = False

    @property
    def names_clusters(self) -> bool:
        """A scan limited to named clusters must never archive findings of clusters it did not look at."""
        return bool(self.clusters)

    @classmethod
    def from_event(cls, event: Any) -> ScanRequest:
        if event is None:
            return cls()
        if not isinstance(event, Mapping):
            raise EventError(f"the event must be a JSON object, got {type(event).__name__}")
        if event.get("detail-type") == "Scheduled Event":
            return cls()  # an EventBridge rule's scheduled event: a full scan; its other keys are EventBridge's
        unknown = sorted(map(str, set(event) - MANUAL_EVENT_FIELDS))
        problems = [p for p in (_unknown_fields(unknown), _list_field(event, "accounts", ACCOUNT_ID, "12-digit account ids"),
                                _list_field(event, "regions", REGION, "Region names"),
                                _list_field(event, "clusters", CLUSTER_NAME, "EKS cluster names"),
                                _bool_field(event, "dry_run"), _str_field(event, "source")) if p]
        if problems:
            raise EventError("; ".join(problems))
        return cls(accounts=_unique(event.get("accounts")), regions=_unique(event.get("regions")),
                   clusters=_unique(event.get("clusters")), dry_run=bool(event.get("dry_run", False)))


def require_targeted(accounts: Iterable[str], targeted: Iterable[str], settings: Settings) -> None:
    """Raises EventError, before anything is assumed or written, when a manual event or a queue message names an
    account the scanner does not target: the scanner acts on its configured accounts only."""
    allowed = set(targeted)
    outside = [a for a in accounts if a not in allowed]
    if outside:
        where = ("the organization's ACTIVE accounts" if settings.use_organization
                 else "TARGET_ACCOUNTS" if settings.target_accounts
                 else "the function's own account, as TARGET_ACCOUNTS is empty")
        raise EventError(f"account(s) {', '.join(outside)} are not targets of this scanner (targets: {where}); "
                         "nothing was scanned")


# `source` is what the schedule sends (events/scheduled.json); the rest narrow or dry-run a manual scan.
MANUAL_EVENT_FIELDS = frozenset({"accounts", "regions", "clusters", "dry_run", "source"})


STRICT_POLICY_KINDS = "networking.k8s.io"
POLICY_KINDS = ("all", STRICT_POLICY_KINDS)
EXEMPTIONS_SOURCE = re.compile(r"ssm:/[A-Za-z0-9_.\-/]{1,2047}|s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]/\S{1,1024}")


def _policy_kinds(env: Mapping[str, str]) -> str:
    value = env.get("CIS_5_3_2_POLICY_KINDS", "").strip() or "all"
    if value not in POLICY_KINDS:
        raise ConfigError(f"CIS_5_3_2_POLICY_KINDS must be one of {', '.join(POLICY_KINDS)}, got {value!r}")
    return value


def _exemptions_source(env: Mapping[str, str]) -> str | None:
    value = env.get("EXEMPTIONS", "").strip()
    if value and not EXEMPTIONS_SOURCE.fullmatch(value):
        raise ConfigError(f"EXEMPTIONS must be ssm:/parameter/name or s3://bucket/key, got {value!r}")
    return value or None


def _split(value: str) -> tuple[str, ...]:
    return _unique(part.strip() for part in value.split(",") if part.strip())


def _unique(values: Iterable[str] | None) -> tuple[str, ...]:
    """In order, without repeats: naming a target twice must not scan it twice."""
    return tuple(dict.fromkeys(values or ()))


def _unknown_fields(unknown: list[str]) -> str | None:
    if not unknown:
        return None
    return f"unknown event field(s): {', '.join(unknown)}; allowed: {', '.join(sorted(MANUAL_EVENT_FIELDS))}"


def _require_all(values: tuple[str, ...], pattern: re.Pattern[str], name: str, error: type[Exception],
                 what: str) -> None:
    bad = [v for v in values if not pattern.fullmatch(v)]
    if bad:
        raise error(f"{name} must hold {what}; not: {', '.join(map(repr, bad))}")


def _positive_int(env: Mapping[str, str], name: str, default: int, maximum: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    if not re.fullmatch(r"[0-9]{1,6}", raw) or not 1 <= int(raw) <= maximum:
        raise ConfigError(f"{name} must be an integer from 1 to {maximum}, got {raw!r}")
    return int(raw)


def _list_field(event: Mapping[str, Any], name: str, pattern: re.Pattern[str], what: str) -> str | None:
    if name not in event:
        return None
    value = event[name]
    if not isinstance(value, list) or not value:
        return f"field '{name}' must be a non-empty list of {what}, got {type(value).__name__} {value!r}"
    bad = [v for v in value if not isinstance(v, str) or not pattern.fullmatch(v)]
    if bad:
        return f"field '{name}' must hold {what}; not: {', '.join(map(repr, bad))}"
    return None


def _bool_field(event: Mapping[str, Any], name: str) -> str | None:
    if name in event and not isinstance(event[name], bool):
        return f"field '{name}' must be true or false, got {type(event[name]).__name__} {event[name]!r}"
    return None


def _str_field(event: Mapping[str, Any], name: str) -> str | None:
    if name in event and not isinstance(event[name], str):
        return f"field '{name}' must be a string, got {type(event[name]).__name__}"
    return None
