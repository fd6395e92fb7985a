"""What `netpol-scan cluster` prints: a table per context, or JSON, or the ASFF findings."""
from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any, TextIO

from handler.controls import CONTROLS
from handler.models import ControlResult
from netpol_scan import indented_json
from netpol_scan.local_scan import ContextScan, asff_findings

CLUSTER_ROW = "(cluster)"  # results about the cluster as a whole, not one namespace


def write(scans: list[ContextScan], output: str, fail_on: str, stream: TextIO) -> None:
    """The report in `output`'s format, ending with a line break. JSON (indented by 2) is written as it is made:
    results and findings are turned into dicts one at a time, never all at once."""
    if output == "json":
        indented_json.dump({"contexts": [_as_json(s, fail_on) for s in scans], "summary": summary(scans, fail_on)},
                           stream)
    elif output == "asff":
        indented_json.dump(asff_findings(scans), stream)
    else:
        stream.write("\n".join([*(_table(s) for s in scans), _summary_line(summary(scans, fail_on), fail_on)]))
    stream.write("\n")


def summary(scans: list[ContextScan], fail_on: str) -> dict[str, Any]:
    return {"contexts": len(scans), "scanned": sum(s.error is None for s in scans),
            "not_assessed": sum(s.error is not None for s in scans),
            "namespaces": sum(len(s.snapshot.namespaces) for s in scans if s.snapshot),
            "failing": sum(len(s.failing(fail_on)) for s in scans), "fail_on": fail_on}


def _as_json(scan: ContextScan, fail_on: str) -> dict[str, Any]:
    ref = scan.ref
    return {"context": scan.context.name, "cluster": ref.name, "account_id": ref.account_id or None,
            "region": ref.region or None, "endpoint": scan.endpoint or None, "error": scan.error,
            "policies": _policy_counts(scan), "failing": len(scan.failing(fail_on)),
            "results": map(ControlResult.to_dict, scan.results)}


def _policy_counts(scan: ContextScan) -> dict[str, int]:
    if scan.snapshot is None:
        return {}
    counts = Counter(p.namespace for p in scan.snapshot.policies)
    return {ns.name: counts[ns.name] for ns in scan.snapshot.namespaces}


def _table(scan: ContextScan) -> str:
    header = f"context {scan.context.name}" + (f" ({scan.endpoint})" if scan.endpoint else "")
    if scan.error:
        return f"{header}\n  NOT ASSESSED: {scan.error}\n"
    verdicts: dict[str, dict[str, str]] = defaultdict(dict)
    for result in scan.results:
        verdicts[result.namespace or CLUSTER_ROW][result.control_id] = result.status.value
    policies = _policy_counts(scan)
    columns = [c.id for c in CONTROLS]
    rows = [["NAMESPACE", *columns, "POLICIES"]]
    for name in sorted(verdicts, key=lambda n: (n != CLUSTER_ROW, n)):
        rows.append([name, *(verdicts[name].get(c, "-") for c in columns),
                     str(policies[name]) if name in policies else "-"])
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    return "\n".join([header, *lines, ""])


def _summary_line(totals: dict[str, Any], fail_on: str) -> str:
    return (f"{totals['contexts']} context(s): {totals['scanned']} scanned, {totals['not_assessed']} not assessed; "
            f"{totals['namespaces']} namespaces, {totals['failing']} failing result(s) at {fail_on} or above")
