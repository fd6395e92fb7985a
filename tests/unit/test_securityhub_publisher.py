"""SecurityHubPublisher with a hand-written fake client, and RateLimiter with a fake clock."""
from __future__ import annotations

import json
import threading

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError

from handler.publish import compact_json
from handler.publish.securityhub import (FINDING_ATTEMPTS, MAX_BATCH_BYTES, MAX_BATCH_FINDINGS, MAX_FINDING_BYTES,
                                         RateLimiter, SecurityHubPublisher, batches, client_config)


def make(i: int, pad: int = 0) -> dict:
    return {"Id": f"finding-{i:04d}", "Description": "x" * pad}


def size(f: dict) -> int:
    return len(json.dumps(f, separators=(",", ":")).encode())


class FakeSecurityHub:
    """Records each BatchImportFindings call; `script(call_no, findings)` returns the failures (or raises)."""

    def __init__(self, script=None):
        self.calls: list[list[str]] = []
        self.script = script or (lambda n, findings: [])

    def batch_import_findings(self, Findings):  # noqa: N803 - boto3's parameter name
        self.calls.append([f["Id"] for f in Findings])
        failed = self.script(len(self.calls), Findings)
        return {"FailedCount": len(failed), "SuccessCount": len(Findings) - len(failed), "FailedFindings": failed}


class NoWait:
    def __init__(self):
        self.waits = 0

    def wait(self):
        self.waits += 1


def publisher(client):
    sleeps: list[float] = []
    limiter = NoWait()
    return SecurityHubPublisher(client, limiter=limiter, sleep=sleeps.append), sleeps, limiter


def fail(findings, code, message="nope"):
    return [{"Id": f["Id"], "ErrorCode": code, "ErrorMessage": message} for f in findings]


def client_error(code: str) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": f"{code} happened"}}, "BatchImportFindings")


# -- batching -------------------------------------------------------------------------------------------------

def encoded(findings):
    return [(f, compact_json(f)) for f in findings]


def test_batches_of_100():
    found = [[f for f, _ in b] for b in batches(encoded(make(i) for i in range(250)))]
    assert [len(b) for b in found] == [100, 100, 50]
    assert [f["Id"] for b in found for f in b] == [make(i)["Id"] for i in range(250)]


def test_batches_split_by_size():
    findings = [make(i, pad=200 * 1024) for i in range(100)]
    found = [[f for f, _ in b] for b in batches(encoded(findings))]
    assert len(found) > 1
    assert all(sum(size(f) for f in b) <= MAX_BATCH_BYTES for b in found)
    assert all(len(b) <= MAX_BATCH_FINDINGS for b in found)
    assert sum(len(b) for b in found) == 100
    assert MAX_BATCH_BYTES < 6 * 1024 * 1024
    # each batch plus the request envelope stays under 6 MB
    assert all(len(json.dumps({"Findings": b}, separators=(",", ":")).encode()) < 6 * 1024 * 1024 for b in found)


def test_batches_empty():
    assert list(batches(encoded([]))) == []


def test_all_imported_in_three_calls():
    client = FakeSecurityHub()
    pub, sleeps, limiter = publisher(client)
    out = pub.import_findings([make(i) for i in range(250)])
    assert out.imported == 250 and out.rejected == [] and out.calls == 3
    assert [len(c) for c in client.calls] == [100, 100, 50]
    assert limiter.waits == 3 and sleeps == []


# -- FailedFindings -------------------------------------------------------------------------------------------

def test_transient_failures_are_retried_then_succeed():
    def script(n, findings):
        return fail(findings[:5], "LimitExceededException") if n <= 2 else []
    client = FakeSecurityHub(script)
    pub, sleeps, _ = publisher(client)
    out = pub.import_findings([make(i) for i in range(120)])
    # Each batch is settled before the next is built: call 1: 100 (5 fail), call 2: those 5 (fail again),
    # call 3: those 5, accepted; call 4: the remaining 20.
    assert [len(c) for c in client.calls] == [100, 5, 5, 20]
    assert set(client.calls[1]) == set(client.calls[2]) == {make(i)["Id"] for i in range(5)}
    assert out.imported == 120 and out.rejected == []
    assert out.imported + len(out.rejected) == 120
    assert len(sleeps) == 2 and 0 < sleeps[0] < sleeps[1]


def test_permanent_failures_reported_without_retry():
    client = FakeSecurityHub(lambda n, findings: fail(findings[:3], "InvalidInput", "bad field"))
    pub, sleeps, _ = publisher(client)
    out = pub.import_findings([make(i) for i in range(10)])
    assert len(client.calls) == 1 and sleeps == []
    assert out.imported == 7
    assert [(r.finding_id, r.error_code, r.error_message) for r in out.rejected] == \
           [(make(i)["Id"], "InvalidInput", "bad field") for i in range(3)]


def test_transient_failure_that_never_clears_is_reported_after_last_attempt():
    client = FakeSecurityHub(lambda n, findings: fail([f for f in findings if f["Id"] == "finding-0002"],
                                                      "InternalException"))
    pub, sleeps, _ = publisher(client)
    out = pub.import_findings([make(i) for i in range(4)])
    assert len(client.calls) == FINDING_ATTEMPTS
    assert client.calls[1:] == [["finding-0002"]] * (FINDING_ATTEMPTS - 1)
    assert [(r.finding_id, r.error_code) for r in out.rejected] == [("finding-0002", "InternalException")]
    assert out.imported == 3 and out.imported + len(out.rejected) == 4
    assert len(sleeps) == FINDING_ATTEMPTS - 1 and sleeps == sorted(sleeps)


def test_client_error_rejects_the_whole_batch_with_its_code():
    def script(n, findings):
        raise client_error("InvalidAccessException")
    client = FakeSecurityHub(script)
    pub, sleeps, _ = publisher(client)
    out = pub.import_findings([make(i) for i in range(150)])
    assert len(client.calls) == 2 and sleeps == []  # permanent: no retry
    assert out.imported == 0 and len(out.rejected) == 150
    assert {r.error_code for r in out.rejected} == {"InvalidAccessException"}
    assert "InvalidAccessException happened" in out.rejected[0].error_message


def test_throttling_client_error_is_retried():
    def script(n, findings):
        if n == 1:
            raise client_error("ThrottlingException")
        return []
    client = FakeSecurityHub(script)
    pub, _, _ = publisher(client)
    out = pub.import_findings([make(i) for i in range(3)])
    assert len(client.calls) == 2 and out.imported == 3 and out.rejected == []


def test_connection_error_is_retried_then_reported():
    def script(n, findings):
        raise EndpointConnectionError(endpoint_url="https://securityhub.eu-west-1.amazonaws.com")
    pub, _, _ = publisher(FakeSecurityHub(script))
    out = pub.import_findings([make(0)])
    assert out.calls == FINDING_ATTEMPTS
    assert [r.error_code for r in out.rejected] == ["EndpointConnectionError"]


def test_oversized_finding_rejected_without_being_sent():
    big = make(1, pad=MAX_FINDING_BYTES)
    client = FakeSecurityHub()
    pub, _, _ = publisher(client)
    out = pub.import_findings([make(0), big, make(2)])
    assert client.calls == [["finding-0000", "finding-0002"]]
    assert [(r.finding_id, r.error_code) for r in out.rejected] == [("finding-0001", "TooLarge")]
    assert out.imported == 2


def test_finding_just_under_the_limit_is_sent():
    f = make(0)
    f["Description"] = "x" * (MAX_FINDING_BYTES - size(f))
    assert size(f) == MAX_FINDING_BYTES
    client = FakeSecurityHub()
    out = publisher(client)[0].import_findings([f])
    assert client.calls == [["finding-0000"]] and out.imported == 1


def test_unknown_failed_id_is_reported_not_retried():
    client = FakeSecurityHub(lambda n, findings: [{"Id": "stranger", "ErrorCode": "InternalException"}])
    out = publisher(client)[0].import_findings([make(0)])
    assert len(client.calls) == 1
    assert [r.finding_id for r in out.rejected] == ["stranger"]


def test_nothing_sent_for_no_findings():
    client = FakeSecurityHub()
    out = publisher(client)[0].import_findings([])
    assert client.calls == [] and out.imported == 0 and out.calls == 0


def test_client_config_is_adaptive():
    assert client_config().retries["mode"] == "adaptive"


# -- RateLimiter ----------------------------------------------------------------------------------------------

class FakeClock:
    def __init__(self, now: float = 1000.0):
        self.now = now
        self.sleeps: list[float] = []
        self.lock = threading.Lock()

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        with self.lock:
            self.sleeps.append(seconds)


@pytest.mark.parametrize("rate", [10.0, 4.0])
def test_burst_is_spaced_one_over_rate(rate):
    clock = FakeClock()
    limiter = RateLimiter(rate, clock=clock, sleep=clock.sleep)
    for _ in range(5):
        limiter.wait()
    assert clock.sleeps == pytest.approx([k / rate for k in range(1, 5)])


def test_no_wait_when_calls_are_spread_out():
    clock = FakeClock()
    limiter = RateLimiter(10.0, clock=clock, sleep=clock.sleep)
    for _ in range(3):
        limiter.wait()
        clock.now += 0.5
    assert clock.sleeps == []


def test_partial_wait():
    clock = FakeClock()
    limiter = RateLimiter(10.0, clock=clock, sleep=clock.sleep)
    limiter.wait()
    clock.now += 0.03
    limiter.wait()
    assert clock.sleeps == pytest.approx([0.07])


def test_spacing_across_threads():
    clock = FakeClock()
    limiter = RateLimiter(10.0, clock=clock, sleep=clock.sleep)
    start = threading.Barrier(8)

    def worker():
        start.wait()
        limiter.wait()

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(5)
    assert sorted(clock.sleeps) == pytest.approx([k / 10 for k in range(1, 8)])


# -- prebuilt request bodies ------------------------------------------------------------------------------------

def answer(request, status: int, body: bytes):
    """An HTTP answer to a request caught at botocore's `before-send` event (nothing goes on the network)."""
    from botocore.awsrequest import AWSResponse

    raw = type("Raw", (), {"stream": lambda self, *args, **kwargs: iter([body])})()
    return AWSResponse(request.url, status, {"Content-Type": "application/json"}, raw)


class Captured:
    """The requests as they would go on the wire, each answered with success."""

    def __init__(self, client) -> None:
        self.bodies: list[bytes] = []
        client.meta.events.register("before-send.securityhub.BatchImportFindings", self)

    def __call__(self, request, **_):
        self.bodies.append(request.body)
        return answer(request, 200, b'{"SuccessCount":0,"FailedCount":0,"FailedFindings":[]}')


def session():
    import boto3

    return boto3.Session(aws_access_key_id="AKIDEXAMPLE", aws_secret_access_key="secret", region_name="eu-west-1")


def asff_findings(count: int) -> list[dict]:
    """Findings as handler.asff builds them, with unicode and nested resources."""
    from tests.unit.test_asff import eks_cluster, finding, info, result
    from handler.asff import cluster_resource
    from handler.targets.discovery import _asff_details
    from handler.models import ComplianceStatus

    resource = cluster_resource(info(details=_asff_details(eks_cluster())))
    return [finding(result(ComplianceStatus.FAILED, namespace=f"team-{i}", evidence=("deny-all", "naïve ☃")),
                    resource=resource) for i in range(count)]


def test_prebuilt_body_is_what_botocore_would_serialize():
    from handler.publish.securityhub import hub_client

    findings = asff_findings(3)
    own = session().client("securityhub", config=client_config())
    prebuilt = hub_client(session(), "eu-west-1")
    by_botocore, by_us = Captured(own), Captured(prebuilt)
    SecurityHubPublisher(own, limiter=NoWait()).import_findings(findings)
    SecurityHubPublisher(prebuilt, limiter=NoWait()).import_findings(findings)
    assert len(by_botocore.bodies) == len(by_us.bodies) == 1
    assert json.loads(by_us.bodies[0]) == json.loads(by_botocore.bodies[0]) == {"Findings": findings}


def test_prebuilt_body_is_signed_and_kept_on_retry():
    from handler.publish.securityhub import hub_client

    client = hub_client(session(), "eu-west-1")
    seen: list[tuple[bytes, str]] = []

    def throttle_once(request, **_):
        seen.append((request.body, request.headers["Authorization"].decode()))
        if len(seen) == 1:
            return answer(request, 429, b'{"__type":"TooManyRequestsException","message":"slow down"}')
        return answer(request, 200, b'{"SuccessCount":2,"FailedCount":0,"FailedFindings":[]}')

    client.meta.events.register("before-send.securityhub.BatchImportFindings", throttle_once)
    outcome = SecurityHubPublisher(client, limiter=NoWait()).import_findings(asff_findings(2))
    assert outcome.imported == 2 and not outcome.rejected
    assert len(seen) == 2 and seen[0][0] == seen[1][0]  # botocore's retry sent the same prebuilt body
    assert len(json.loads(seen[0][0])["Findings"]) == 2
    assert all("SignedHeaders=" in auth and "Signature=" in auth for _, auth in seen)


def test_encoded_batch_without_hooks_is_a_plain_list():
    from handler.publish.securityhub import EncodedBatch

    findings = [make(1), make(2)]
    batch = EncodedBatch([(f, json.dumps(f).encode()) for f in findings])
    assert list(batch) == findings
    assert json.loads(batch.body) == {"Findings": findings}
