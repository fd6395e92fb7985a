"""The pure helpers of handler.cluster_reader: list items, Retry-After, error reasons, the cluster CA; and list
items made into namespaces and policies page by page, through a stand-in for the kubernetes client."""
from __future__ import annotations

import base64
import json
import math
import pickle
from typing import Any

import pytest

from handler.cluster_reader import (MAX_RETRY_AFTER_SECONDS, ClusterReader, _ca_pem, _decode, _explain, _namespace,
                                    _policy, _retry_after)
from handler.errors import ClusterReadError
from handler.models import EMPTY, EXEMPT_ANNOTATION, EXEMPT_UNTIL_ANNOTATION, ClusterInfo, ClusterRef

REF = ClusterRef("123456789012", "eu-west-1", "alpha")
PEM = "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIU\n-----END CERTIFICATE-----\n"


def info(ca_data: str) -> ClusterInfo:
    return ClusterInfo(REF, "https://example.invalid", ca_data)


# -- list items -----------------------------------------------------------------------------------------------

def test_metadata_only_namespace():
    item = {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
            "metadata": {"name": "team-a", "labels": {"team": "a"}, "annotations": {"owner": "x"},
                         "uid": "u", "resourceVersion": "1"}}
    ns = _namespace(item)
    assert (ns.name, dict(ns.labels), dict(ns.annotations), ns.terminating) == ("team-a", {"team": "a"}, {}, False)


def test_a_namespace_keeps_only_the_exemption_annotations():
    """Helm's and kubectl's annotations are most of a namespace's metadata and no verdict reads them."""
    annotations = {"meta.helm.sh/release-name": "r", EXEMPT_ANNOTATION: "CAB-1", EXEMPT_UNTIL_ANNOTATION: "2030-01-01",
                   "kubectl.kubernetes.io/last-applied-configuration": "{}"}
    ns = _namespace({"metadata": {"name": "n", "annotations": annotations}})
    assert dict(ns.annotations) == {EXEMPT_ANNOTATION: "CAB-1", EXEMPT_UNTIL_ANNOTATION: "2030-01-01"}
    only_until = _namespace({"metadata": {"name": "n",
                                          "annotations": {EXEMPT_UNTIL_ANNOTATION: "2030-01-01", "a": "b"}}})
    assert dict(only_until.annotations) == {EXEMPT_UNTIL_ANNOTATION: "2030-01-01"}
    assert _namespace({"metadata": {"name": "n", "annotations": {"a": "b"}}}).annotations is EMPTY


def test_metadata_only_namespace_with_deletion_timestamp_is_terminating():
    ns = _namespace({"metadata": {"name": "old", "deletionTimestamp": "2025-01-01T00:00:00Z"}})
    assert ns.terminating is True


def test_full_namespace_terminating_phase():
    assert _namespace({"metadata": {"name": "n"}, "status": {"phase": "Terminating"}}).terminating is True
    assert _namespace({"metadata": {"name": "n"}, "status": {"phase": "Active"}}).terminating is False


def test_namespace_null_labels_become_empty():
    ns = _namespace({"metadata": {"name": "n", "labels": None, "annotations": None, "deletionTimestamp": None}})
    assert dict(ns.labels) == {} and dict(ns.annotations) == {} and ns.terminating is False


def test_absent_labels_and_annotations_are_an_empty_mapping_that_cannot_be_filled():
    ns = _namespace({"metadata": {"name": "n"}})
    assert ns.labels == {} and ns.annotations == {} and json.dumps(ns.labels) == "{}"
    with pytest.raises(TypeError):
        ns.labels["team"] = "a"  # shared by every namespace without labels: it must stay empty
    with pytest.raises(TypeError):
        ns.annotations.update(owner="x")
    assert pickle.loads(pickle.dumps(ns)) == ns
    assert _namespace({"metadata": {"name": "m"}}).labels == {}


def test_a_read_makes_equal_names_and_label_values_one_string():
    def item(name: str, team: str) -> dict[str, Any]:  # new strings, as JSON parsing makes them
        return json.loads(json.dumps({"metadata": {"name": name, "labels": {
            "kubernetes.io/metadata.name": name, "team": team, "managed-by": "Helm"}}}))

    strings: dict[str, str] = {}
    a, b, c = (_namespace(item(name, team), strings) for name, team in (("a", "payments"), ("b", "payments"),
                                                                         ("c", "search")))
    assert a.labels == {"kubernetes.io/metadata.name": "a", "team": "payments", "managed-by": "Helm"}
    assert a.labels["team"] is b.labels["team"] and a.labels["managed-by"] is c.labels["managed-by"]
    assert a.labels["kubernetes.io/metadata.name"] is a.name and c.labels["team"] == "search"
    assert _namespace({"metadata": {"name": "n"}}, strings).labels is EMPTY


def test_namespace_without_name_raises_key_error():
    with pytest.raises(KeyError):
        _namespace({"metadata": {}})


def test_policy():
    spec = {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
    p = _policy({"metadata": {"namespace": "team-a", "name": "default-deny"}, "spec": spec})
    assert (p.namespace, p.name, dict(p.spec)) == ("team-a", "default-deny", spec)
    assert p.kind == "NetworkPolicy" and p.api_version == "networking.k8s.io/v1"
    assert dict(_policy({"metadata": {"namespace": "a", "name": "b"}}).spec) == {}
    with pytest.raises(KeyError):
        _policy({"metadata": {"name": "no-namespace"}})


# -- Retry-After ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("headers, expected", [
    ({"Retry-After": "5"}, 5.0), ({"retry-after": "2.5"}, 2.5), ({"RETRY-AFTER": "0"}, 0.0),
    ({}, 1.0), ({"Content-Type": "application/json"}, 1.0),
    ({"Retry-After": "3600"}, MAX_RETRY_AFTER_SECONDS), ({"Retry-After": "-4"}, 0.0),
    ({"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}, 1.0), ({"Retry-After": ""}, 1.0),
    ({"Retry-After": "inf"}, MAX_RETRY_AFTER_SECONDS),
])
def test_retry_after(headers, expected):
    assert _retry_after(headers) == expected


def test_retry_after_cap_is_bounded():
    assert 0 < MAX_RETRY_AFTER_SECONDS <= 60


def test_retry_after_nan_is_bounded():
    value = _retry_after({"Retry-After": "nan"})
    assert math.isfinite(value) and 0.0 <= value <= MAX_RETRY_AFTER_SECONDS


# -- reasons --------------------------------------------------------------------------------------------------

def status_body(message: str) -> bytes:
    return json.dumps({"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": message,
                       "code": 0}).encode()


def test_explain_401_points_at_access_entries():
    text = _explain(401, "/api/v1/namespaces", status_body("Unauthorized"))
    assert "HTTP 401" in text and "/api/v1/namespaces" in text and "Unauthorized" in text
    assert "access entry" in text and "aws-auth" in text


def test_explain_403_points_at_permissions():
    text = _explain(403, "/apis/networking.k8s.io/v1/networkpolicies",
                    status_body('networkpolicies.networking.k8s.io is forbidden: User "x" cannot list'))
    assert "HTTP 403" in text and "forbidden" in text
    assert "infra/kubernetes/rbac.yaml" in text and "netpol-scanner:readers" in text and "networkpolicies" in text
    assert "access entry" not in text


@pytest.mark.parametrize("body", [b"", b"<html>bad gateway</html>", b"[1, 2]", b"null", b'"text"', b"\xff\xfe"])
def test_explain_with_unusable_body(body):
    text = _explain(502, "/api/v1/namespaces", body)
    assert text == "HTTP 502 on /api/v1/namespaces"


def test_explain_timeout():
    assert "timed out" in _explain(0, "/api/v1/namespaces", b"")


def test_decode():
    assert _decode(b'{"items": []}', "/p") == {"items": []}
    for body in (b"not json", b"[]"):
        with pytest.raises(ClusterReadError, match="/p"):
            _decode(body, "/p")


# -- CA -------------------------------------------------------------------------------------------------------

def test_ca_pem_ok():
    assert _ca_pem(info(base64.b64encode(PEM.encode()).decode())) == PEM


@pytest.mark.parametrize("ca_data", ["not base64!!", "QUJD=", "YWJj\n", "***"])
def test_ca_pem_rejects_non_base64(ca_data):
    with pytest.raises(ClusterReadError, match="alpha"):
        _ca_pem(info(ca_data))


@pytest.mark.parametrize("raw", [b"", b"just text", b"-----BEGIN PRIVATE KEY-----\nabc\n", b"\xff\xfe\x00binary"])
def test_ca_pem_rejects_non_pem(raw):
    with pytest.raises(ClusterReadError, match="alpha"):
        _ca_pem(info(base64.b64encode(raw).decode()))


# -- list items through the reader ----------------------------------------------------------------------------

class _Response:
    def __init__(self, status: int, page: Any) -> None:
        self.status, self._body = status, json.dumps(page).encode()

    def read(self) -> bytes:
        return self._body

    def getheaders(self) -> dict[str, str]:
        return {}


class _Api:
    """The kubernetes ApiClient as the reader uses it: one list page per path, 404 for anything else."""

    def __init__(self, pages: dict[str, Any]) -> None:
        self.pages, self.paths = pages, []

    def param_serialize(self, method: str, path: str, **_: Any) -> tuple[str]:
        return (path,)

    def call_api(self, path: str, **_: Any) -> _Response:
        self.paths.append(path)
        return _Response(200, self.pages[path]) if path in self.pages else _Response(404, {})

    def close(self) -> None:
        pass


def test_list_items_become_namespaces_and_policies():
    api = _Api({"/api/v1/namespaces": {"items": [{"metadata": {"name": "a", "labels": {"team": "x"}}},
                                                 {"metadata": {"name": "b", "deletionTimestamp": "t"}}]},
                "/apis/networking.k8s.io/v1/networkpolicies": {"items": [
                    {"metadata": {"namespace": "a", "name": "deny"}, "spec": {"podSelector": {}}}]},
                "/apis": {"groups": []}})
    snapshot = ClusterReader().read_with(info(""), api)
    assert [(n.name, dict(n.labels), n.terminating) for n in snapshot.namespaces] == [("a", {"team": "x"}, False),
                                                                                     ("b", {}, True)]
    assert [(p.namespace, p.name, dict(p.spec)) for p in snapshot.policies] == [("a", "deny", {"podSelector": {}})]
    assert snapshot.api_requests == len(api.paths)


def test_a_malformed_list_item_is_a_read_error():
    # The namespaces are listed beside the other reads (read_snapshot), so those may have been made too.
    api = _Api({"/api/v1/namespaces": {"items": [{"metadata": {"name": "a"}}, {"metadata": {"labels": {}}}]},
                "/apis/networking.k8s.io/v1/networkpolicies": {"items": []}, "/apis": {"groups": []}})
    with pytest.raises(ClusterReadError, match="malformed list item from https://example.invalid"):
        ClusterReader().read_with(info(""), api)
    assert api.paths.count("/api/v1/namespaces") == 1
