"""Reliability figures: every fault the tests inject, run for real, against what happened to the findings.

    .venv/bin/python -m bench.reliability [--write docs/reliability.md]

One moto server over HTTP (S3, STS, EKS, SQS, SSM, Security Hub behind netpol_scan.sandbox's throttling and
rejecting proxy) and one TLS Kubernetes API test server per cluster, as in the integration tests. Each scenario
starts from a clean first scan of its cluster (the baseline: what Security Hub and the state say), injects its
fault, runs the scanner through its real entry (handler.app.lambda_handler, the worker's handler, or the inline
executor with a short time budget where the fault is about time), and then compares:

- findings lost: baseline findings of namespaces that still exist, gone from Security Hub or no longer ACTIVE in
  it, plus findings the scanner's state records as published but Security Hub does not hold as recorded;
- false resolutions: baseline FAILED findings of unchanged namespaces now PASSED or ARCHIVED (a cluster that could
  not be read must never resolve anything);
- duplicates: more than one finding for one namespace and control (different Ids), or more than one report per
  run;
- report written: every run of the scenario has its report in S3 ("refused" when the invocation raised before any
  write, which is what a bad event or a bad exemptions document must do);
- state = Security Hub: every finding's status and record state in the state object equals Security Hub's.

With --write the table replaces the one between the markers in docs/reliability.md. Exits 1 when a row shows a
lost finding, a false resolution or a duplicate.
"""
from __future__ import annotations

import argparse
import contextlib
import gzip
import io
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BUCKET = "netpol-reliability"
ROOT = Path(__file__).resolve().parents[1]
BEGIN, END = "<!-- reliability table: begin -->", "<!-- reliability table: end -->"
DENY_ALL = {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}


@dataclass
class Row:
    fault: str
    outcome: str
    lost: int
    false_resolutions: int
    duplicates: int
    report: str
    state_agrees: bool

    def markdown(self) -> str:
        # The sandbox's ports change every run; the table should change only when the scanner's behaviour does.
        outcome = re.sub(r"127\.0\.0\.1:\d+", "127.0.0.1:<port>", self.outcome)
        return (f"| {self.fault} | {outcome} | {self.lost} | {self.false_resolutions} | {self.duplicates} | "
                f"{self.report} | {'yes' if self.state_agrees else 'NO'} |")


class Lab:
    """The world every scenario runs in, reset between scenarios."""

    def __init__(self, world: Any, hub: Any) -> None:
        from netpol_scan.sandbox.aws_world import DEFAULT_ACCOUNT, DEFAULT_REGION

        self.world, self.hub = world, hub
        self.account, self.region = DEFAULT_ACCOUNT, DEFAULT_REGION
        self.reports: list[str] = []

    def reset(self, **env: str) -> None:
        urllib.request.urlopen(urllib.request.Request(f"{self.world.endpoint}/moto-api/reset", method="POST")).read()
        self.world.create_bucket(BUCKET)
        # Versioned, so that a report written twice shows as two versions of its key.
        self.world.client("s3").put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
        self.world.enable_security_hub(self.account, self.region)
        self.hub.throttle(0)
        self.hub.calls.clear()
        self.hub.reject(lambda finding: None)
        for key in ("FLEET_MODE", "SCAN_QUEUE_URL", "EXEMPTIONS", "K8S_PAGE_SIZE"):
            os.environ.pop(key, None)
        os.environ.update(env)
        self.reports = []

    def cluster(self, name: str, namespaces: int = 4):
        from netpol_scan.sandbox.kube_api import Cluster

        cluster = Cluster(name, {f"ns-{i:02d}": ({"deny": DENY_ALL} if i % 3 == 0 else {}) for i in range(namespaces)})
        self.world.add_cluster(self.account, self.region, cluster)
        return cluster

    def invoke(self, event: Any = None, seconds: float = 900) -> dict[str, Any]:
        from handler.app import lambda_handler
        from netpol_scan.lambda_context import LambdaContext

        summary = lambda_handler({} if event is None else event, LambdaContext(seconds))
        self.reports.append(summary.get("report", "missing"))
        return summary

    def scanner_run(self, seconds: float, read_timeout: float = 30.0, budget: Any = None) -> dict[str, Any]:
        """An inline run whose reader and time budget are short: faults about time, in seconds."""
        import logging

        import boto3

        from handler.cluster_reader import ClusterReader, ReadLimits
        from handler.config import ScanRequest, Settings
        from handler.run.discover import discover
        from handler.run.executors import Inline
        from handler.run.report import Run
        from handler.run.scan import ScanContext, TimeBudget
        from netpol_scan.lambda_context import LambdaContext

        context = LambdaContext(seconds)
        scan_context = ScanContext.create(Settings.from_env(), boto3.Session(), logging.getLogger("reliability"),
                                          reader=ClusterReader(ReadLimits(read_timeout=read_timeout)),
                                          remaining_seconds=lambda: context.get_remaining_time_in_millis() / 1000,
                                          budget=budget or TimeBudget())
        summary = Inline()(scan_context, Run.start(), ScanRequest(), discover(scan_context, ScanRequest()))
        self.reports.append(summary.get("report", "missing"))
        return summary

    def report_versions(self, key: str) -> int:
        listed = self.world.client("s3").list_object_versions(Bucket=BUCKET, Prefix=key)
        return max(1, sum(v["Key"] == key for v in listed.get("Versions", [])))

    def hub_findings(self) -> dict[str, dict[str, Any]]:
        return {f["Id"]: f for f in self.world.findings(self.account, self.region)}

    def state(self, name: str) -> dict[str, Any]:
        key = f"state/account={self.account}/region={self.region}/cluster={name}.json.gz"
        try:
            body = self.world.client("s3").get_object(Bucket=BUCKET, Key=key)["Body"].read()
        except Exception:  # noqa: BLE001 - no state: nothing recorded
            return {}
        return json.loads(gzip.decompress(body))["findings"]

    def measure(self, fault: str, outcome: str, baseline: dict[str, tuple[str, str]], gone: set[str] = frozenset(),
                names: tuple[str, ...] = ("c",), refused: bool = False) -> Row:
        hub = self.hub_findings()
        live = {fid: v for fid, v in baseline.items() if v[1] == "ACTIVE" and not any(f"/namespace/{g}/" in fid
                                                                                   for g in gone)}
        lost = sum(1 for fid in live if fid not in hub or hub[fid]["RecordState"] != "ACTIVE")
        false = sum(1 for fid, (status, _) in live.items() if fid in hub and status == "FAILED"
                    and (hub[fid]["Compliance"]["Status"] == "PASSED" or hub[fid]["RecordState"] != "ACTIVE"))
        per_resource = Counter((f["ProductFields"].get("kubernetes/cluster"), f["ProductFields"].get(
            "kubernetes/namespace"), f["GeneratorId"]) for f in hub.values())
        duplicates = sum(n - 1 for n in per_resource.values())
        duplicates += sum(self.report_versions(r) - 1 for r in set(self.reports) if r != "missing")
        agrees, recorded_missing = True, 0
        for name in names:
            for fid, record in self.state(name).items():
                held = hub.get(fid)
                if held is None or (held["Compliance"]["Status"], held["RecordState"]) != (
                        record["result"]["status"], record["record_state"]):
                    agrees = False
                    recorded_missing += held is None or held["RecordState"] != record["record_state"]
        keys = set(self.world.s3_keys(BUCKET))
        report = "refused" if refused else ("yes" if self.reports and all(r in keys for r in self.reports)
                                            else "NO")
        return Row(fault, outcome, lost + recorded_missing, false, duplicates, report, agrees)


def baseline(lab: Lab) -> dict[str, tuple[str, str]]:
    lab.invoke()
    return {fid: (f["Compliance"]["Status"], f["RecordState"]) for fid, f in lab.hub_findings().items()}


def failures(summary: dict[str, Any]) -> str:
    found = [f["error"] for f in summary.get("failures", [])]
    if not found:
        return f"scanned ({summary.get('clusters_scanned', 0)} cluster)"
    return "NOT_AVAILABLE: " + found[0].split(" (")[0][:70]


# -- scenarios ------------------------------------------------------------------------------------------------
def read_fault(fault: str, inject: Callable[[Any, Lab], None], namespaces: int = 4, **env: str) -> Callable[[Lab], Row]:
    def scenario(lab: Lab) -> Row:
        lab.reset(**env)
        cluster = lab.cluster("c", namespaces)
        before = baseline(lab)
        inject(cluster, lab)
        summary = lab.invoke()
        return lab.measure(fault, failures(summary), before)
    return scenario


def unreachable(cluster: Any, lab: Lab) -> None:
    lab.world.server(lab.account, lab.region, "c").stop()


def bad_ca(cluster: Any, lab: Lab) -> None:
    from netpol_scan.sandbox.kube_api import generate_tls

    server = lab.world.server(lab.account, lab.region, "c")
    lab.world._point(lab.account, lab.region, "c", server.endpoint, generate_tls().ca_pem)  # another CA


def cilium_forbidden(cluster: Any, lab: Lab) -> None:
    cluster.forbid("ciliumnetworkpolicies")


def with_cilium(fault: str) -> Callable[[Lab], Row]:
    def scenario(lab: Lab) -> Row:
        lab.reset()
        cluster = lab.cluster("c")
        cluster.add_resource_kind("cilium.io", "v2", "ciliumnetworkpolicies", "CiliumNetworkPolicy", True)
        before = baseline(lab)
        cluster.forbid("ciliumnetworkpolicies")
        summary = lab.invoke()
        return lab.measure(fault, failures(summary) + " (the kind's verdicts say it was unreadable)", before)
    return scenario


def timeouts(lab: Lab) -> Row:
    lab.reset()
    cluster = lab.cluster("c")
    before = baseline(lab)
    cluster.inject("networkpolicies$", None, times=None, delay_seconds=2)
    summary = lab.scanner_run(900, read_timeout=0.5)
    return lab.measure("read timeouts (every answer later than the read timeout)", failures(summary), before)


def out_of_time(lab: Lab) -> Row:
    from handler.run.scan import TimeBudget

    lab.reset()
    cluster = lab.cluster("c")
    before = baseline(lab)
    cluster.inject("namespaces$", None, times=None, delay_seconds=20)
    summary = lab.scanner_run(32, budget=TimeBudget(start=1, after_read=26, publish_margin=2))
    return lab.measure("invocation running out of time (32 s left, 26 s kept back; answers take 20 s)",
                       failures(summary), before)


def hub_throttled(lab: Lab) -> Row:
    lab.reset()
    lab.cluster("c", namespaces=40)  # 120+ findings: two import calls
    lab.hub.throttle(3)
    summary = lab.invoke()
    throttled = [c.status for c in lab.hub.calls].count(429)
    outcome = f"{failures(summary)}; {throttled} calls answered 429, retried"
    return lab.measure("Security Hub throttling (3 calls answered 429)", outcome, {})


def hub_failed_findings(lab: Lab) -> Row:
    lab.reset()
    lab.cluster("c", namespaces=10)
    refused: set[str] = set()

    def once(finding: dict[str, Any]) -> str | None:
        if finding["Id"] in refused:
            return None
        refused.add(finding["Id"])
        return "InternalException"

    lab.hub.reject(once)
    summary = lab.invoke()
    outcome = (f"{failures(summary)}; {len(refused)} findings refused once and sent again, "
               f"{summary['findings_rejected']} reported rejected")
    return lab.measure("Security Hub FailedFindings (each finding refused once, transient)", outcome, {})


def overlapping_runs(lab: Lab) -> Row:
    lab.reset()
    cluster = lab.cluster("c")
    before = baseline(lab)
    seen = len(cluster.requests_to("networkpolicies$"))
    cluster.add_namespace("new")
    cluster.inject("networkpolicies$", None, times=1, delay_seconds=3)
    slow: list[dict[str, Any]] = []
    first = threading.Thread(target=lambda: slow.append(lab.invoke()))
    first.start()
    while len(cluster.requests_to("networkpolicies$")) == seen:
        time.sleep(0.02)
    cluster.delete_namespace("ns-01")
    fast = lab.invoke()
    first.join()
    outcome = (f"the faster run archived {fast['findings_archived']}; the slower one, writing second, imported "
               f"{slow[0]['findings_imported']} over that state")
    return lab.measure("two overlapping runs (a namespace deleted between their reads)", outcome, before,
                       gone={"ns-01"})


def queue(lab: Lab, **env: str) -> tuple[Any, str]:
    lab.reset(**env)
    sqs = lab.world.client("sqs")
    dlq = sqs.create_queue(QueueName="scan-dlq.fifo", Attributes={"FifoQueue": "true"})["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    url = sqs.create_queue(QueueName="scan.fifo", Attributes={
        "FifoQueue": "true", "VisibilityTimeout": "5400",
        "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": 3})})["QueueUrl"]
    os.environ.update(FLEET_MODE="queue", SCAN_QUEUE_URL=url)
    return sqs, url


def sqs_event(sqs: Any, url: str, message: dict[str, Any]) -> dict[str, Any]:
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    return {"Records": [{"messageId": message["MessageId"], "receiptHandle": message["ReceiptHandle"],
                         "body": message["Body"], "attributes": message["Attributes"], "messageAttributes": {},
                         "md5OfBody": message["MD5OfBody"], "eventSource": "aws:sqs", "eventSourceARN": arn,
                         "awsRegion": "eu-west-1"}]}


def receive(sqs: Any, url: str) -> dict[str, Any]:
    (message,) = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=1, AttributeNames=["All"])["Messages"]
    return message


def worker_crash(lab: Lab) -> Row:
    """The worker process is killed (SIGKILL) after Security Hub took its first batch, before it saved state; the
    message comes back after the visibility timeout and another worker does the cluster whole."""
    from handler import worker
    from netpol_scan.lambda_context import LambdaContext

    sqs, url = queue(lab)
    cluster = lab.cluster("c", namespaces=6)
    os.environ["FLEET_MODE"] = "inline"
    before = baseline(lab)
    os.environ["FLEET_MODE"] = "queue"
    for i in range(40):
        cluster.add_namespace(f"more-{i:02d}")  # 120 new findings: two import calls
    lab.invoke()
    message = receive(sqs, url)
    script = ("import json, sys; from handler import worker; from netpol_scan.lambda_context import LambdaContext; "
              "worker.lambda_handler(json.load(sys.stdin), LambdaContext(900))")
    child = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE, cwd=ROOT, env=dict(os.environ),
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    calls: list[str] = []

    def kill_after_first_batch(finding: dict[str, Any]) -> None:
        calls.append(finding["Id"])
        if len(calls) == 101:  # the second call's first finding: the first batch is in Security Hub
            os.kill(child.pid, signal.SIGKILL)
        return None

    lab.hub.reject(kill_after_first_batch)
    child.communicate(json.dumps(sqs_event(sqs, url, message)).encode(), timeout=300)
    lab.hub.reject(lambda finding: None)
    sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=0)
    again = receive(sqs, url)  # as after the worker's timeout: delivered again
    worker.lambda_handler(sqs_event(sqs, url, again), LambdaContext(900))
    killed = child.returncode == -signal.SIGKILL
    outcome = (f"{'killed' if killed else 'NOT killed'} during its second import call; delivery "
               f"{again['Attributes']['ApproximateReceiveCount']} did the cluster whole")
    return lab.measure("worker crash mid-publish (SIGKILL between two import calls)", outcome, before)


def dlq_replay(lab: Lab) -> Row:
    """A task that went to the dead-letter queue is replayed after its run's report was written."""
    from handler import worker
    from netpol_scan.lambda_context import LambdaContext

    sqs, url = queue(lab, SCAN_MAX_RECEIVES="1")
    cluster = lab.cluster("c")
    os.environ["FLEET_MODE"] = "inline"
    before = baseline(lab)
    os.environ["FLEET_MODE"] = "queue"
    cluster.inject("namespaces$", 503, times=None)
    lab.invoke()
    message = receive(sqs, url)
    worker.lambda_handler(sqs_event(sqs, url, message), LambdaContext(900))  # its last attempt: dead-lettered
    cluster.clear_faults()
    worker.lambda_handler(sqs_event(sqs, url, {**message, "Attributes": {**message["Attributes"],
                                                                         "ApproximateReceiveCount": "1"}}),
                          LambdaContext(900))  # the replay
    report = json.loads(lab.world.client("s3").get_object(Bucket=BUCKET, Key=lab.reports[-1])["Body"].read())
    return lab.measure("DLQ replay (a dead-lettered task run again after its run's report)",
                       f"the run reported it failed ({report['summary']['clusters_failed']}); the replay published "
                       "it; the report was not written again", before)


def bad_event(lab: Lab) -> Row:
    lab.reset()
    lab.cluster("c")
    before = baseline(lab)
    try:
        lab.invoke({"accounts": "123456789012"})
        outcome = "accepted (wrong)"
    except ValueError as error:
        outcome = f"EventError: {str(error)[:60]}"
    return lab.measure("bad event (a field of the wrong type)", outcome, before, refused=True)


def bad_exemptions(lab: Lab) -> Row:
    lab.reset()
    lab.cluster("c")
    before = baseline(lab)
    lab.world.client("ssm").put_parameter(Name="/eks-netpol-scanner/exemptions", Type="String",
                                          Value='{"exemptions": [{"namespace": "x"}]}')
    os.environ["EXEMPTIONS"] = "ssm:/eks-netpol-scanner/exemptions"
    try:
        lab.invoke()
        outcome = "accepted (wrong)"
    except ValueError as error:
        outcome = f"ConfigError: {str(error)[:60]}"
    return lab.measure("bad exemptions document", outcome, before, refused=True)


def expire_every_continue_token(cluster: Any, lab: Lab) -> None:
    cluster.continue_token_lifetime_pages = 1


SCENARIOS: list[Callable[[Lab], Row]] = [
    read_fault("429 with Retry-After (twice)", lambda c, _: c.inject("namespaces$", 429, times=2,
                                                                    headers={"Retry-After": "1"})),
    read_fault("410 Gone on every continue token", expire_every_continue_token, namespaces=6, K8S_PAGE_SIZE="2"),
    read_fault("5xx, transient (503 twice)", lambda c, _: c.inject("networkpolicies$", 503, times=2)),
    read_fault("5xx, persistent (503)", lambda c, _: c.inject("networkpolicies$", 503, times=None)),
    timeouts,
    read_fault("unreachable endpoint (connection refused)", unreachable),
    read_fault("bad CA (the endpoint's certificate is not the cluster's CA)", bad_ca),
    read_fault("401 (token refused)", lambda c, _: c.inject("namespaces$", 401, times=None)),
    read_fault("403 on namespaces", lambda c, _: c.forbid("namespaces")),
    read_fault("403 on networkpolicies", lambda c, _: c.forbid("networkpolicies")),
    with_cilium("403 on ciliumnetworkpolicies (an optional kind)"),
    hub_throttled,
    hub_failed_findings,
    out_of_time,
    worker_crash,
    overlapping_runs,
    dlq_replay,
    bad_event,
    bad_exemptions,
]


def run() -> list[Row]:
    from netpol_scan.sandbox.aws_world import World
    from netpol_scan.sandbox.securityhub_proxy import SecurityHubProxy

    with World() as world, SecurityHubProxy(world.endpoint) as hub:
        os.environ.update({**world.env(), "REPORT_BUCKET": BUCKET, "AWS_ENDPOINT_URL_SECURITYHUB": hub.endpoint,
                           "POWERTOOLS_TRACE_DISABLED": "true", "POWERTOOLS_LOG_LEVEL": "CRITICAL",
                           "POWERTOOLS_METRICS_DISABLED": "true"})
        for key in ("SCAN_ROLE_NAME", "TARGET_ACCOUNTS", "TARGET_REGIONS", "AWS_PROFILE", "AWS_SESSION_TOKEN"):
            os.environ.pop(key, None)
        lab = Lab(world, hub)
        rows = []
        for scenario in SCENARIOS:
            started = time.monotonic()
            with contextlib.redirect_stdout(io.StringIO()):  # EMF metric lines
                rows.append(scenario(lab))
            print(f"{time.monotonic() - started:5.1f} s  {rows[-1].markdown()}", file=sys.stderr, flush=True)
        return rows


def table(rows: list[Row]) -> str:
    head = ("| fault injected | what the scanner did | findings lost | false resolutions | duplicates | report written "
            "| state = Security Hub |\n|---|---|---|---|---|---|---|")
    return "\n".join([head, *(r.markdown() for r in rows)])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--write", type=Path, help="replace the table in this Markdown file (docs/reliability.md)")
    args = parser.parse_args()
    import logging
    import warnings
    logging.disable(logging.WARNING)  # the scanner's own warnings are the faults at work; the table says it
    warnings.simplefilter("ignore")
    started = time.monotonic()
    rows = run()
    text = table(rows)
    print(text)
    print(f"{len(rows)} scenarios in {time.monotonic() - started:.0f} s", file=sys.stderr)
    if args.write:
        doc = args.write.read_text()
        head, rest = doc.split(BEGIN, 1)
        args.write.write_text(f"{head}{BEGIN}\n{text}\n{END}{rest.split(END, 1)[1]}")
    bad = [r for r in rows if r.lost or r.false_resolutions or r.duplicates or r.report == "NO" or not r.state_agrees]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
