"""The Kubernetes API test server's authorization, as pure logic: what a request asks for (kube-apiserver's
RequestInfo), how RBAC rules and bindings match it, kube-aware version order, and the protobuf review decoder.
kubectl proves the same end to end in tests/integration/test_kube_api_server.py."""
from __future__ import annotations

import pytest

from netpol_scan.sandbox.kube_api.protobuf import ProtobufError, review_spec
from netpol_scan.sandbox.kube_api.rbac import Attributes, PolicyRule, Rbac
from netpol_scan.sandbox.kube_api.request_info import attributes_of
from netpol_scan.sandbox.kube_api.routes import version_priority

USER = "arn:aws:sts::111122223333:assumed-role/Scanner/session-1"
ROLE = "arn:aws:iam::111122223333:role/Scanner"


@pytest.mark.parametrize("method, path, query, want", [
    ("GET", "/api/v1/namespaces", {}, Attributes("list", True, "", "namespaces")),
    ("GET", "/api/v1/namespaces", {"watch": "true"}, Attributes("watch", True, "", "namespaces")),
    ("GET", "/api/v1/namespaces/team-a", {}, Attributes("get", True, "", "namespaces", "", "team-a", "team-a")),
    ("GET", "/api/v1/namespaces/team-a/status", {},
     Attributes("get", True, "", "namespaces", "status", "team-a", "team-a")),
    ("GET", "/apis/networking.k8s.io/v1/namespaces/a/networkpolicies", {},
     Attributes("list", True, "networking.k8s.io", "networkpolicies", "", "a")),
    ("DELETE", "/apis/cilium.io/v2/ciliumnetworkpolicies", {},
     Attributes("deletecollection", True, "cilium.io", "ciliumnetworkpolicies")),
    ("POST", "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews", {},
     Attributes("create", True, "authorization.k8s.io", "selfsubjectaccessreviews")),
    ("GET", "/apis/cilium.io/v2", {}, Attributes("get", False, path="/apis/cilium.io/v2")),
    ("GET", "/api/v1", {}, Attributes("get", False, path="/api/v1")),
    ("POST", "/version", {}, Attributes("post", False, path="/version")),
])
def test_request_attributes_like_kube_apiserver(method: str, path: str, query: dict[str, str],
                                                want: Attributes) -> None:
    assert attributes_of(method, path, query) == want


def test_rule_matching_by_group_resource_subresource_name_and_url() -> None:
    names = PolicyRule(("get",), ("apps",), ("daemonsets",), ("aws-node",))
    assert names.allows(Attributes("get", True, "apps", "daemonsets", name="aws-node", namespace="kube-system"))
    assert not names.allows(Attributes("list", True, "apps", "daemonsets", namespace="kube-system"))
    assert not names.allows(Attributes("get", True, "", "daemonsets", name="aws-node"))
    status = PolicyRule(("get",), ("*",), ("*/status",))
    assert status.allows(Attributes("get", True, "", "namespaces", "status", name="a"))
    assert not status.allows(Attributes("get", True, "", "namespaces", name="a"))
    urls = PolicyRule(("get",), non_resource_urls=("/apis/*",))
    assert urls.allows(Attributes("get", False, path="/apis/cilium.io/v2"))
    assert not urls.allows(Attributes("get", False, path="/api"))
    assert not urls.allows(Attributes("get", True, "", "namespaces"))


def test_role_binding_grants_a_cluster_role_in_its_namespace_only() -> None:
    rbac = Rbac()
    rbac.apply([
        {"kind": "ClusterRole", "metadata": {"name": "read-cm"},
         "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]}]},
        {"kind": "RoleBinding", "metadata": {"name": "b", "namespace": "kube-system"},
         "roleRef": {"kind": "ClusterRole", "name": "read-cm"}, "subjects": [{"kind": "Group", "name": "readers"}]},
    ])
    rbac.add_groups(ROLE, "readers")  # an access entry names the role: every session of it is in the group
    in_kube_system = rbac.decide(USER, Attributes("get", True, "", "configmaps", namespace="kube-system", name="x"))
    assert in_kube_system.allowed and in_kube_system.reason == (
        'RBAC: allowed by RoleBinding "b/kube-system" of ClusterRole "read-cm" to Group "readers"')
    assert not rbac.decide(USER, Attributes("get", True, "", "configmaps", namespace="default", name="x")).allowed
    assert not rbac.decide(USER, Attributes("list", True, "", "configmaps")).allowed  # cluster scope
    assert rbac.groups_of(USER) == ["readers", "system:authenticated"]


def test_version_priority_is_kube_aware() -> None:
    versions = ["v1alpha1", "v11alpha2", "foo10", "v2", "v1beta1", "v10", "v3beta1", "foo1", "v1", "v12alpha1"]
    assert sorted(versions, key=version_priority) == [
        "v10", "v2", "v1", "v3beta1", "v1beta1", "v12alpha1", "v11alpha2", "v1alpha1", "foo1", "foo10"]


def _message(*fields: tuple[int, bytes]) -> bytes:
    return b"".join(bytes([number << 3 | 2, len(value)]) + value for number, value in fields)


def test_protobuf_access_review_decodes_to_its_json_spec() -> None:
    attributes = _message((1, b"kube-system"), (2, b"get"), (3, b"apps"), (5, b"daemonsets"), (7, b"aws-node"))
    raw = _message((1, b""), (2, _message((1, attributes))))
    body = b"k8s\x00" + _message((1, _message((1, b"authorization.k8s.io/v1"), (2, b"SelfSubjectAccessReview"))),
                                 (2, raw))
    assert review_spec(body, "SelfSubjectAccessReview") == {"resourceAttributes": {
        "namespace": "kube-system", "verb": "get", "group": "apps", "resource": "daemonsets", "name": "aws-node"}}
    with pytest.raises(ProtobufError):
        review_spec(b'{"spec": {}}', "SelfSubjectAccessReview")
    with pytest.raises(ProtobufError):
        review_spec(b"k8s\x00" + bytes([2 << 3 | 2, 50]) + b"short", "SelfSubjectAccessReview")
