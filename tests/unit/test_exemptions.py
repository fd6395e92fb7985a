"""handler.exemptions: validation of the configuration, annotations, and how a FAILED finding is exempted and
fails again after the expiry."""
from __future__ import annotations

import json

import pytest

from handler import exemptions
from handler.asff import build_finding
from handler.controls import CONTROLS_BY_ID, namespace_network_policy
from handler.errors import ConfigError
from handler.models import ClusterRef, ComplianceStatus, ControlResult, Namespace

REF = ClusterRef("111122223333", "eu-west-1", "prod-eu")
IDS = {"cis-k8s-5.3.2", "netpol-default-deny-ingress"}
BEFORE, AFTER = "2027-01-31T23:59:00.000Z", "2027-02-01T00:00:00.000Z"


def entry(**overrides):
    return {"account": "111122223333", "cluster": "prod-*", "namespace": "legacy-*", "reason": "migration",
            "by": "jane@example.com", "until": "2027-01-31", **overrides}


def load(*entries):
    return exemptions.parse(json.dumps({"exemptions": list(entries)}), "ssm:/x", IDS)


def failed(namespace="legacy-app", control="cis-k8s-5.3.2"):
    return ControlResult(control, namespace, ComplianceStatus.FAILED, f"Namespace {namespace} has no network policy",
                         "why it matters")


def apply(results, rules=(), namespaces=(Namespace("legacy-app"),), now=BEFORE):
    return exemptions.apply(results, REF, namespaces, rules, now)


def test_config_exemption_in_force_is_warning_and_says_who_why_until():
    (r,) = apply([failed()], load(entry()))
    assert r.status is ComplianceStatus.WARNING and r.title.endswith("(exempted)")
    assert "jane@example.com" in r.description and "migration" in r.description and "until 2027-01-31" in r.description  # as written: a date means through that day
    assert r.fields[exemptions.BY_FIELD] == "jane@example.com" and r.fields[exemptions.STATE_FIELD] == "in force"
    f = build_finding(r, CONTROLS_BY_ID[r.control_id], REF, None, created_at=BEFORE, updated_at=BEFORE)
    assert f["Compliance"]["Status"] == "WARNING" and f["Severity"]["Label"] == "INFORMATIONAL"
    assert f["ProductFields"][exemptions.REASON_FIELD] == "migration"


def test_after_expiry_it_fails_again_and_says_the_exemption_expired():
    (r,) = apply([failed()], load(entry()), now=AFTER)
    assert r.status is ComplianceStatus.FAILED and "expired" in r.description
    assert r.fields[exemptions.STATE_FIELD] == "expired"


@pytest.mark.parametrize("scope", [{"account": "999999999999"}, {"cluster": "dev-*"}, {"namespace": "other"},
                                   {"controls": ["netpol-default-deny-ingress"]}])
def test_out_of_scope_leaves_the_finding_failed(scope):
    (r,) = apply([failed()], load(entry(**scope)))
    assert r == failed()


def test_only_failed_results_change():
    passed = ControlResult("cis-k8s-5.3.2", "legacy-app", ComplianceStatus.PASSED, "t", "d")
    assert apply([passed], load(entry())) == [passed]


def annotated(until: str | None) -> Namespace:
    return Namespace("legacy-app", annotations={exemptions.ANNOTATION: "vendor appliance",
                                                **({exemptions.ANNOTATION_UNTIL: until} if until else {})})


def test_annotation_exempts_until_its_expiry_and_bad_dates_are_reported():
    ns = annotated("2027-01-31T12:00:00Z")
    (r,) = apply([failed()], namespaces=(ns,), now="2027-01-31T11:00:00Z")
    assert r.status is ComplianceStatus.WARNING and "vendor appliance" in r.description
    assert "Annotation exemptions last at most 90 days" in r.description
    (r,) = apply([failed()], namespaces=(ns,), now="2027-01-31T12:00:00Z")
    assert r.status is ComplianceStatus.FAILED
    (r,) = apply([failed()], namespaces=(annotated("soon"),))
    assert r.status is ComplianceStatus.FAILED and "'soon'" in r.description


def test_an_annotation_without_expiry_or_beyond_the_maximum_is_not_honoured_and_says_why():
    (forever,) = apply([failed()], namespaces=(annotated(None),), now="2027-01-01T00:00:00Z")
    assert forever.status is ComplianceStatus.FAILED
    assert "has no netpol-scanner.io/exempt-until, so it was not honoured" in forever.description
    (far,) = apply([failed()], namespaces=(annotated("2027-04-02T00:00:01Z"),), now="2027-01-01T00:00:00Z")
    assert far.status is ComplianceStatus.FAILED and "more than 90 days ahead" in far.description
    (near,) = apply([failed()], namespaces=(annotated("2027-04-01T00:00:00Z"),), now="2027-01-01T00:00:00Z")
    assert near.status is ComplianceStatus.WARNING  # exactly 90 days ahead
    (longer,) = exemptions.apply([failed()], REF, (annotated("2027-06-01"),), (), "2027-01-01T00:00:00Z", 180)
    assert longer.status is ComplianceStatus.WARNING and "at most 180 days" in longer.description


@pytest.mark.parametrize("text, message", [
    ("not json", "not JSON"), ('{"exemptions": {}}', "at most"),
    (json.dumps({"exemptions": [entry(until="someday")]}), "ISO 8601"),
    (json.dumps({"exemptions": [entry(reason="")]}), "'reason'"),
    (json.dumps({"exemptions": [entry(by=None)]}), "'by'"),
    (json.dumps({"exemptions": [entry(account="12")]}), "'account'"),
    (json.dumps({"exemptions": [entry(controls=["cis-9.9"])]}), "'controls'"),
    (json.dumps({"exemptions": [entry(color="red")]}), "unknown field"),
])
def test_bad_configuration_is_a_clear_error(text, message):
    with pytest.raises(ConfigError, match=message):
        exemptions.parse(text, "s3://b/k", IDS)


def test_every_problem_is_named_at_once():
    with pytest.raises(ConfigError) as error:
        load(entry(reason=""), entry(until="x"))
    assert "entry 0" in str(error.value) and "entry 1" in str(error.value)


def test_5_3_2_exempt_namespace_is_not_counted_failing():
    from handler.run.scan import counts
    from handler.models import ClusterInfo, ClusterSnapshot
    snap = ClusterSnapshot(ClusterInfo(REF, "https://x", ""), (Namespace("legacy-app"),), ())
    results = apply(namespace_network_policy.evaluate(snap), load(entry()))
    assert counts(snap, results)["namespaces_failing"] == 0
    assert counts(snap, namespace_network_policy.evaluate(snap))["namespaces_failing"] == 1
