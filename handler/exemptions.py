"""Exemptions: namespaces whose failing findings are accepted for a while, with who, why and until when.

Two sources, both read once per run:
- a configuration document (JSON) in an SSM parameter or an S3 object, named by EXEMPTIONS (`ssm:/path` or
  `s3://bucket/key`); each entry scopes by account, cluster and namespace (name or glob pattern) and optionally
  by controls, and must say who approved it, why, and until when (ISO 8601 date or date-time);
- the namespace annotation `netpol-scanner.io/exempt: "<reason>"`, with a required
  `netpol-scanner.io/exempt-until: "<ISO 8601>"` at most ANNOTATION_EXEMPTION_MAX_DAYS (90) days ahead: anyone
  who can annotate a namespace could otherwise silence it for ever. An annotation without one, or beyond it, is
  not honoured, and the finding says why.

A FAILED namespace finding with an exemption in force becomes WARNING (not counted as failing), keeps its Id,
and says who exempted it, why and until when (Title, Description, ProductFields); after the expiry the finding
is FAILED again and says the exemption expired. The ASFF choice is explained in docs/exemptions.md.
A configuration that does not validate raises ConfigError before anything is read or written.
"""
from __future__ import annotations

import datetime as dt
import fnmatch
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from handler.config import DEFAULT_ANNOTATION_EXEMPTION_MAX_DAYS
from handler.errors import ConfigError
from handler.models import (EXEMPT_ANNOTATION, EXEMPT_UNTIL_ANNOTATION, ClusterRef, ComplianceStatus, ControlResult,
                            Namespace)

if TYPE_CHECKING:  # only a configured EXEMPTIONS source is read with boto3; `netpol-scan cluster` does without
    import boto3

ANNOTATION, ANNOTATION_UNTIL = EXEMPT_ANNOTATION, EXEMPT_UNTIL_ANNOTATION
REASON_FIELD = "eks-netpol-scanner/exemption/reason"
BY_FIELD = "eks-netpol-scanner/exemption/by"
UNTIL_FIELD = "eks-netpol-scanner/exemption/until"
STATE_FIELD = "eks-netpol-scanner/exemption/state"  # "in force" or "expired"
ENTRY_KEYS = {"account", "cluster", "namespace", "controls", "reason", "by", "until"}
MAX_ENTRIES = 1000


@dataclass(frozen=True)
class Exemption:
    reason: str
    by: str
    until: dt.datetime
    account: str = "*"
    cluster: str = "*"
    namespace: str = "*"
    controls: tuple[str, ...] = ()  # empty: every namespace control
    until_text: str = ""  # `until` as the approver wrote it: what the finding shows (a date means its whole day)
    terms: str = ""  # the rule it was held to, said in the finding

    def covers(self, cluster: ClusterRef, namespace: str, control_id: str) -> bool:
        return (self.account in ("*", cluster.account_id) and fnmatch.fnmatchcase(cluster.name, self.cluster)
                and fnmatch.fnmatchcase(namespace, self.namespace)
                and (not self.controls or control_id in self.controls))

    def in_force(self, now: dt.datetime) -> bool:
        return now < self.until


def load(source: str | None, session: boto3.Session, region: str, control_ids: Iterable[str]) -> tuple[Exemption, ...]:
    """The configured exemptions; ConfigError naming every problem when the document is bad or unreadable."""
    if not source:
        return ()
    return parse(_fetch(source, session, region), source, set(control_ids))


def _fetch(source: str, session: boto3.Session, region: str) -> str:
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        if source.startswith("ssm:"):
            ssm = session.client("ssm", region_name=region)
            return ssm.get_parameter(Name=source[4:], WithDecryption=True)["Parameter"]["Value"]
        if source.startswith("s3://") and "/" in source[5:]:
            bucket, key = source[5:].split("/", 1)
            return session.client("s3", region_name=region).get_object(Bucket=bucket, Key=key)["Body"].read().decode()
    except (ClientError, BotoCoreError, UnicodeDecodeError) as error:
        raise ConfigError(f"EXEMPTIONS: cannot read {source}: {error}") from error
    raise ConfigError(f"EXEMPTIONS must be ssm:/parameter/name or s3://bucket/key, got {source!r}")


def parse(text: str, source: str, control_ids: set[str]) -> tuple[Exemption, ...]:
    try:
        document = json.loads(text)
    except ValueError as error:
        raise ConfigError(f"EXEMPTIONS {source}: not JSON ({error})") from error
    entries = document.get("exemptions") if isinstance(document, Mapping) else None
    if not isinstance(entries, list) or len(entries) > MAX_ENTRIES:
        raise ConfigError(f"EXEMPTIONS {source}: want {{\"exemptions\": [...]}} with at most {MAX_ENTRIES} entries")
    problems: list[str] = []
    exemptions = [e for i, entry in enumerate(entries) if (e := _entry(entry, i, control_ids, problems))]
    if problems:
        raise ConfigError(f"EXEMPTIONS {source}: " + "; ".join(problems))
    return tuple(exemptions)


def _entry(entry: Any, index: int, control_ids: set[str], problems: list[str]) -> Exemption | None:
    where = f"entry {index}"
    if not isinstance(entry, Mapping):
        problems.append(f"{where} is not an object")
        return None
    before = len(problems)
    unknown = sorted(set(map(str, entry)) - ENTRY_KEYS)
    if unknown:
        problems.append(f"{where}: unknown field(s) {', '.join(unknown)}")
    for key in ("reason", "by", "until", "namespace"):
        if not isinstance(entry.get(key), str) or not entry[key].strip():
            problems.append(f"{where}: '{key}' must be a non-empty string")
    account = entry.get("account", "*")
    if not (account == "*" or (isinstance(account, str) and account.isdigit() and len(account) == 12)):
        problems.append(f"{where}: 'account' must be a 12-digit account id or *, got {account!r}")
    controls = entry.get("controls", [])
    if not isinstance(controls, list) or any(c not in control_ids for c in controls):
        problems.append(f"{where}: 'controls' must list control ids among {', '.join(sorted(control_ids))}")
    until = _date(entry.get("until")) if isinstance(entry.get("until"), str) else None
    if isinstance(entry.get("until"), str) and until is None:
        problems.append(f"{where}: 'until' is not an ISO 8601 date or date-time: {entry['until']!r}")
    if len(problems) > before:
        return None
    return Exemption(reason=entry["reason"].strip(), by=entry["by"].strip(), until=until, account=account,
                     cluster=str(entry.get("cluster", "*")), namespace=entry["namespace"], controls=tuple(controls),
                     until_text=entry["until"].strip())


def _date(text: str) -> dt.datetime | None:
    """ISO 8601. A bare date means through that day: the exemption ends at the next midnight UTC."""
    try:
        if len(text.strip()) == 10:
            return dt.datetime.combine(dt.date.fromisoformat(text.strip()), dt.time(), dt.timezone.utc) \
                + dt.timedelta(days=1)
        moment = dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.timezone.utc)


def from_annotations(namespace: Namespace, now: dt.datetime,
                     max_days: int = DEFAULT_ANNOTATION_EXEMPTION_MAX_DAYS) -> tuple[Exemption | None, str | None]:
    """The namespace's own exemption, or why its annotations were not honoured: an annotation exemption needs an
    expiry at most `max_days` ahead."""
    reason = (namespace.annotations.get(ANNOTATION) or "").strip()
    if not reason:
        return None, None
    rule = f"an annotation exemption needs {ANNOTATION_UNTIL}, at most {max_days} days ahead"
    raw_until = (namespace.annotations.get(ANNOTATION_UNTIL) or "").strip()
    if not raw_until:
        return None, f"the annotation {ANNOTATION} has no {ANNOTATION_UNTIL}, so it was not honoured ({rule})"
    until = _date(raw_until)
    if until is None:
        return None, f"the annotation {ANNOTATION_UNTIL}={raw_until!r} is not an ISO 8601 date, so it was ignored"
    if until > _end_of_day(now + dt.timedelta(days=max_days)):
        return None, (f"the annotation {ANNOTATION_UNTIL}={raw_until!r} is more than {max_days} days ahead, so the "
                      f"exemption was not honoured ({rule})")
    return Exemption(reason, f"namespace annotation {ANNOTATION}", until, namespace=namespace.name,
                     until_text=raw_until, terms=f"Annotation exemptions last at most {max_days} days."), None


def _end_of_day(moment: dt.datetime) -> dt.datetime:
    """The next midnight UTC: a limit of N days admits the date N days ahead, as `until` means through that day."""
    return dt.datetime.combine(moment.astimezone(dt.timezone.utc).date() + dt.timedelta(days=1), dt.time(),
                               dt.timezone.utc)


def apply(results: Sequence[ControlResult], cluster: ClusterRef, namespaces: Iterable[Namespace],
          exemptions: Sequence[Exemption], now: str,
          annotation_max_days: int = DEFAULT_ANNOTATION_EXEMPTION_MAX_DAYS) -> list[ControlResult]:
    """FAILED namespace results under an exemption in force become WARNING and say so; expired ones say so."""
    annotated = {ns.name: ns for ns in namespaces if ANNOTATION in ns.annotations or ANNOTATION_UNTIL in ns.annotations}
    if not exemptions and not annotated:
        return list(results)  # the common case: nothing can be exempt, so nothing to look at per result
    moment = dt.datetime.fromisoformat(now.replace("Z", "+00:00"))
    by_name = {ns.name: ns for ns in namespaces}
    return [_exempted(r, cluster, by_name.get(r.namespace or ""), exemptions, moment, annotation_max_days)
            for r in results]


def _exempted(result: ControlResult, cluster: ClusterRef, namespace: Namespace | None,
              exemptions: Sequence[Exemption], now: dt.datetime, annotation_max_days: int) -> ControlResult:
    if result.status is not ComplianceStatus.FAILED or namespace is None:
        return result
    annotated, ignored = from_annotations(namespace, now, annotation_max_days)
    found = [e for e in exemptions if e.covers(cluster, namespace.name, result.control_id)]
    found += [annotated] if annotated else []
    active = [e for e in found if e.in_force(now)]
    if active:
        chosen = max(active, key=lambda e: e.until)
        terms = f"{chosen.terms} " if chosen.terms else ""
        return result._replace(status=ComplianceStatus.WARNING, title=f"{result.title} (exempted)",
                               description=f"Exempted by {chosen.by} until {_show(chosen)}: {chosen.reason}. "
                                           f"{terms}Not counted as failing while the exemption is in force. "
                                           f"{result.description}",
                               fields=_fields(chosen, "in force"))
    if found:
        last = max(found, key=lambda e: e.until)  # every one has expired, so each has an until
        return result._replace(description=f"The exemption by {last.by} expired on {_show(last)} "
                                           f"({last.reason}). {result.description}",
                               fields=_fields(last, "expired"))
    if ignored:
        return result._replace(description=f"{result.description} Note: {ignored}.")
    return result


def _fields(exemption: Exemption, state: str) -> dict[str, str]:
    return {REASON_FIELD: exemption.reason, BY_FIELD: exemption.by, UNTIL_FIELD: _show(exemption),
            STATE_FIELD: state}


def _show(exemption: Exemption) -> str:
    return exemption.until_text or exemption.until.isoformat().replace("+00:00", "Z")
