"""`netpol-scan cluster` against Kubernetes API test servers over TLS, through a real kubeconfig file whose user
gets its token from an exec plugin, as EKS kubeconfigs do: the plugin signs an EKS token with handler.targets.auth
against the moto server, and the API server verifies it like the EKS authenticator."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from handler.cluster_reader import ClusterReader
from handler.controls import CONTROLS
from netpol_scan.cli import main
from netpol_scan.kubeconfig import read, select_contexts
from netpol_scan.local_scan import scan_contexts
from netpol_scan.sandbox.aws_world import World, closed_port
from netpol_scan.sandbox.kube_api import Cluster, KubeApiServer, generate_tls
from tests.unit.asff_model import limit_errors, model_errors

PAYMENTS_ARN = "arn:aws:eks:eu-west-1:123456789012:cluster/payments"
DENY_ALL = {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
EXEC_PLUGIN = """
import json, sys
import boto3
from handler.targets.auth import eks_token
token = eks_token(boto3.Session(), sys.argv[1], "eu-west-1")
print(json.dumps({"apiVersion": "client.authentication.k8s.io/v1beta1", "kind": "ExecCredential",
                  "status": {"token": token}}))
"""
# Runs the CLI in a fresh interpreter and then names the modules it loaded that a scan of a kubeconfig does not use.
MODULES_LOADED_BY_A_SCAN = """
import json, sys
from netpol_scan.cli import main
code = main(sys.argv[1:])
unused = ("boto3", "botocore", "s3transfer", "aws_lambda_powertools", "aws_xray_sdk", "handler.asff", "handler.state")
sys.stderr.write("\\n" + json.dumps(sorted(m for m in sys.modules if m.startswith(unused))) + "\\n")
sys.exit(code)
"""


class Fleet:
    """API servers and the kubeconfig that names them, one context per server."""

    def __init__(self, world: World, directory: Path) -> None:
        self.world, self.directory = world, directory
        self.plugin = directory / "eks-token.py"
        self.plugin.write_text(EXEC_PLUGIN)
        self.kubeconfig = directory / "kubeconfig"
        self.servers: list[KubeApiServer] = []
        self.entries: list[tuple[str, str, str, list[str]]] = []  # (context, endpoint, CA base64, plugin args)

    def serve(self, context: str, cluster: Cluster, signed_for: str | None = None) -> Cluster:
        """`signed_for`: the cluster name the token is signed for (another name makes the server answer 401)."""
        server = KubeApiServer(cluster, self.world.verifier).start()
        self.servers.append(server)
        self.entries.append((context, server.endpoint, server.ca_data, [signed_for or cluster.name]))
        return cluster

    def unreachable(self, context: str) -> None:
        import base64

        ca = base64.b64encode(generate_tls().ca_pem).decode()
        self.entries.append((context, f"https://127.0.0.1:{closed_port()}", ca, ["down"]))

    def write(self, current: str | None = None, plugin_args: dict[str, list[str]] | None = None) -> Path:
        env = [{"name": k, "value": v} for k, v in self.world.env().items()]
        config: dict[str, Any] = {"apiVersion": "v1", "kind": "Config", "preferences": {},
                                  "current-context": current or self.entries[0][0],
                                  "clusters": [], "users": [], "contexts": []}
        for context, endpoint, ca, args in self.entries:
            args = (plugin_args or {}).get(context, args)
            config["clusters"].append({"name": context, "cluster": {"server": endpoint,
                                                                    "certificate-authority-data": ca}})
            config["users"].append({"name": context, "user": {"exec": {
                "apiVersion": "client.authentication.k8s.io/v1beta1", "command": sys.executable,
                "args": [str(self.plugin), *args], "env": env, "interactiveMode": "Never"}}})
            config["contexts"].append({"name": context, "context": {"cluster": context, "user": context}})
        self.kubeconfig.write_text(yaml.safe_dump(config))
        return self.kubeconfig

    def stop(self) -> None:
        for server in self.servers:
            server.stop()


@pytest.fixture
def fleet(world: World, tmp_path: Path) -> Iterator[Fleet]:
    fleet = Fleet(world, tmp_path)
    yield fleet
    fleet.stop()


def payments() -> Cluster:
    cluster = Cluster("payments", {"default": {}, "kube-system": {}, "ledger": {"deny": DENY_ALL, "allow": DENY_ALL},
                                   "batch": {}})
    cluster.add_namespace("old-team", terminating=True)
    return cluster


def compliant() -> Cluster:
    """Every namespace isolated both ways, and a running Cilium agent enforcing the policies."""
    cluster = Cluster("tidy", {"default": {"deny": DENY_ALL}, "apps": {"deny": DENY_ALL}})
    cluster.add_resource_kind("cilium.io", "v2", "ciliumnetworkpolicies", "CiliumNetworkPolicy", True)
    cluster.add_resource_kind("apps", "v1", "daemonsets", "DaemonSet", True)
    cluster.add_object("apps/v1", "daemonsets", {"metadata": {"name": "cilium", "namespace": "kube-system"},
                                                 "status": {"desiredNumberScheduled": 2, "numberReady": 2}})
    return cluster


def json_scan(fleet: Fleet, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict[str, Any]]:
    code, out, _ = run(fleet, capsys, "--output", "json", *args)
    return code, json.loads(out)


def run(fleet: Fleet, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["cluster", "--kubeconfig", str(fleet.kubeconfig), *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_table_shows_each_namespace_with_its_verdicts_and_policies_and_fails(fleet, capsys):
    fleet.serve(PAYMENTS_ARN, payments())
    fleet.write()

    code, out, _ = run(fleet, capsys)

    assert code == 1
    rows = {line.split()[0]: line.split()[1:] for line in out.splitlines() if line.startswith("  ")}
    columns = [c.id for c in CONTROLS]
    assert rows["NAMESPACE"] == [*columns, "POLICIES"]
    netpol = columns.index("cis-k8s-5.3.2")
    assert (rows["ledger"][netpol], rows["ledger"][-1]) == ("PASSED", "2")
    assert (rows["batch"][netpol], rows["batch"][-1]) == ("FAILED", "0")
    assert rows["default"][netpol] == "FAILED" and rows["old-team"][netpol] == "WARNING"
    _, document = json_scan(fleet, capsys)
    for result in document["contexts"][0]["results"]:  # every verdict of every control is in the table
        assert rows[result["namespace"] or "(cluster)"][columns.index(result["control_id"])] == result["status"]
    failing = document["summary"]["failing"]
    assert failing >= 2
    assert f"1 context(s): 1 scanned, 0 not assessed; 5 namespaces, {failing} failing result(s) at LOW" in out


@pytest.mark.parametrize("fail_on", ["low", "MEDIUM", "high", "critical", "none"])
def test_fail_on_compares_the_failing_controls_severity(fleet, capsys, fail_on):
    fleet.serve(PAYMENTS_ARN, payments())
    fleet.write()
    _, document = json_scan(fleet, capsys, "--fail-on", "NONE")
    severities = {c.id: c.severity for c in CONTROLS}
    failing = {severities[r["control_id"]] for r in document["contexts"][0]["results"] if r["status"] == "FAILED"}
    assert "MEDIUM" in failing  # CIS 5.3.2 on namespace batch
    order = ["INFORMATIONAL", "LOW", "MEDIUM", "HIGH", "CRITICAL"]
    expected = int(fail_on.upper() != "NONE" and any(order.index(s) >= order.index(fail_on.upper())
                                                     for s in failing))

    assert run(fleet, capsys, "--fail-on", fail_on)[0] == expected
    if fail_on in ("MEDIUM", "none"):
        assert expected == {"MEDIUM": 1, "none": 0}[fail_on]


def test_a_compliant_cluster_exits_zero(fleet, capsys):
    fleet.serve("tidy", compliant())
    fleet.write()

    code, out, _ = run(fleet, capsys)

    assert code == 0, out
    assert "2 namespaces, 0 failing" in out


def test_json_output(fleet, capsys):
    fleet.serve(PAYMENTS_ARN, payments())
    fleet.serve("tidy", compliant())
    fleet.write()

    code, document = json_scan(fleet, capsys, "--all-contexts")

    assert code == 1
    first, second = document["contexts"]
    assert (first["context"], first["account_id"], first["region"], first["cluster"]) == (
        PAYMENTS_ARN, "123456789012", "eu-west-1", "payments")
    assert first["endpoint"].startswith("https://127.0.0.1:") and first["error"] is None
    assert first["policies"] == {"default": 0, "kube-system": 0, "ledger": 2, "batch": 0, "old-team": 0}
    netpol = {r["namespace"]: r["status"] for r in first["results"] if r["control_id"] == "cis-k8s-5.3.2"}
    assert netpol == {"default": "FAILED", "kube-system": "FAILED", "ledger": "PASSED", "batch": "FAILED",
                      "old-team": "WARNING"}
    assert {r["control_id"] for r in first["results"]} == {c.id for c in CONTROLS}
    assert first["failing"] == sum(r["status"] == "FAILED" for r in first["results"])
    assert second["failing"] == 0 and second["account_id"] is None
    assert document["summary"] == {"contexts": 2, "scanned": 2, "not_assessed": 0, "namespaces": 7,
                                   "failing": first["failing"], "fail_on": "LOW"}


def test_json_and_asff_are_printed_as_json_dumps_with_indent_2(fleet, capsys):
    fleet.serve(PAYMENTS_ARN, payments())
    fleet.write()

    for output in ("json", "asff"):
        code, out, _ = run(fleet, capsys, "-o", output)

        assert code == 1 and out == json.dumps(json.loads(out), indent=2) + "\n"


def test_a_cluster_scan_loads_neither_the_aws_sdk_nor_the_asff_builder(fleet):
    fleet.serve(PAYMENTS_ARN, payments())
    fleet.write()

    done = subprocess.run([sys.executable, "-c", MODULES_LOADED_BY_A_SCAN, "cluster", "-o", "json", "--kubeconfig",
                           str(fleet.kubeconfig)], capture_output=True, text=True, timeout=120)

    assert done.returncode == 1, done.stderr
    assert json.loads(done.stdout)["summary"]["scanned"] == 1
    assert json.loads(done.stderr.splitlines()[-1]) == []


def test_asff_output_is_what_the_lambda_imports(fleet, capsys):
    fleet.serve(PAYMENTS_ARN, payments())
    fleet.write()
    _, document = json_scan(fleet, capsys)

    code, out, _ = run(fleet, capsys, "-o", "asff")

    assert code == 1
    findings = json.loads(out)
    assert len(findings) == len(document["contexts"][0]["results"])
    for finding in findings:
        assert model_errors(finding) == [] and limit_errors(finding) == []
        assert finding["AwsAccountId"] == "123456789012"
        assert finding["ProductArn"] == ("arn:aws:securityhub:eu-west-1:123456789012:product/123456789012/default")
    ids = {f["Id"]: f["Compliance"]["Status"] for f in findings}
    assert ids[f"{PAYMENTS_ARN}/namespace/batch/cis-k8s-5.3.2"] == "FAILED"


def test_asff_of_a_cluster_without_an_eks_arn_needs_account_and_region(fleet, capsys):
    fleet.serve("kind-dev", compliant())
    fleet.write()

    code, out, err = run(fleet, capsys, "-o", "asff")
    assert code == 2 and out == ""
    assert "kind-dev" in err and "--account-id" in err

    code, out, _ = run(fleet, capsys, "-o", "asff", "--account-id", "111122223333", "--region", "eu-central-1")
    assert code == 0
    findings = json.loads(out)
    assert findings and all(f["Id"].startswith("arn:aws:eks:eu-central-1:111122223333:cluster/kind-dev/")
                            and f["AwsAccountId"] == "111122223333" for f in findings)


def test_unreachable_context_is_not_assessed_and_exits_3(fleet, capsys):
    fleet.serve(PAYMENTS_ARN, payments())
    fleet.unreachable("down")
    fleet.write()

    code, out, _ = run(fleet, capsys, "--all-contexts")

    assert code == 3  # a cluster not assessed outranks failing namespaces
    (down,) = [block for block in out.split("\n\n") if block.startswith("context down ")]
    assert "\n  NOT ASSESSED: cannot reach https://127.0.0.1:" in down and "Connection refused" in down
    assert "2 context(s): 1 scanned, 1 not assessed" in out


def test_asff_of_an_unreadable_cluster_is_its_not_available_finding(fleet, capsys):
    fleet.unreachable("arn:aws:eks:eu-west-1:123456789012:cluster/down")
    fleet.write()

    code, out, _ = run(fleet, capsys, "-o", "asff")

    assert code == 3
    (finding,) = json.loads(out)
    assert finding["Id"] == "arn:aws:eks:eu-west-1:123456789012:cluster/down/cluster-scan"
    assert finding["Compliance"]["Status"] == "NOT_AVAILABLE" and "cannot reach" in finding["Description"]


def test_401_names_access_entries(fleet, capsys):
    fleet.serve("stranger", payments(), signed_for="some-other-cluster")
    fleet.write()

    code, out, _ = run(fleet, capsys)

    assert code == 3
    assert "HTTP 401" in out and "access entry" in out


def test_403_names_the_missing_permission(fleet, capsys):
    fleet.serve("readonly", payments()).forbid("networkpolicies")
    fleet.write()

    code, out, _ = run(fleet, capsys)

    assert code == 3
    assert "HTTP 403" in out
    assert 'cannot list resource "networkpolicies" in API group "networking.k8s.io"' in out


def test_a_failing_credential_plugin_is_named(fleet, capsys):
    fleet.serve("broken-plugin", payments())
    fleet.write(plugin_args={"broken-plugin": ["payments", "unexpected-argument"]})
    fleet.plugin.write_text("import sys\nsys.exit('aws: error: the security token is expired')\n")

    code, out, _ = run(fleet, capsys)

    assert code == 3
    assert "credential plugin failed" in out


def test_no_kubeconfig(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("KUBECONFIG", raising=False)
    missing = tmp_path / "nothing-here"

    code = main(["cluster", "--kubeconfig", str(missing)])

    _, err = capsys.readouterr()
    assert code == 2
    assert f"no kubeconfig: {missing} does not exist" in err and "aws eks update-kubeconfig" in err


@pytest.mark.parametrize(("text", "says"), [("clusters: [\n  - {name: a\n", "while parsing a flow"),
                                            ("just a line of text\n", "it is not a kubeconfig")])
def test_a_kubeconfig_that_is_not_one_is_bad_input(tmp_path, capsys, text, says):
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(text)

    code = main(["cluster", "--kubeconfig", str(kubeconfig)])

    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    assert f"netpol-scan cluster: cannot read kubeconfig {kubeconfig}: " in err and says in err


def test_every_context_is_scanned_as_the_kubeconfig_was_read_once(fleet):
    fleet.serve(PAYMENTS_ARN, payments())
    fleet.serve("tidy", compliant())
    fleet.write()
    kubeconfig = read([fleet.kubeconfig])
    contexts = select_contexts(kubeconfig, [], every=True)
    fleet.kubeconfig.write_text("")  # e.g. rewritten by `aws eks update-kubeconfig` during the scan

    scans = scan_contexts(kubeconfig, contexts, ClusterReader(), concurrency=2)

    assert [(s.context.name, s.error) for s in scans] == [(PAYMENTS_ARN, None), ("tidy", None)]
    assert [len(s.snapshot.namespaces) for s in scans if s.snapshot] == [5, 2]


def test_unknown_context_lists_the_known_ones(fleet, capsys):
    fleet.serve("tidy", compliant())
    fleet.write()

    code, _, err = run(fleet, capsys, "--context", "prod")

    assert code == 2
    assert "no context 'prod' in the kubeconfig; it has: tidy" in err


def test_context_flags_exclude_each_other(fleet, capsys):
    fleet.serve("tidy", compliant())
    fleet.write()

    assert run(fleet, capsys, "--context", "tidy", "--all-contexts")[0] == 2


def test_progress_bar_counts_contexts(fleet, capsys):
    fleet.serve(PAYMENTS_ARN, payments())
    fleet.serve("tidy", compliant())
    fleet.unreachable("down")
    fleet.write()

    code, _, err = run(fleet, capsys, "--all-contexts", "--progress", "--concurrency", "2")

    assert code == 3
    assert err.count("\r[") == 3
    assert f"[{'#' * 30}] 3/3" in err and "NOT ASSESSED" in err


def test_console_script_uses_kubeconfig_from_the_environment(fleet):
    fleet.serve("tidy", compliant())
    fleet.write()
    script = Path(sys.executable).parent / "netpol-scan"

    done = subprocess.run([str(script), "cluster", "-o", "json"], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "KUBECONFIG": f"{fleet.directory / 'absent'}{os.pathsep}"
                                                            f"{fleet.kubeconfig}"})

    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["summary"]["namespaces"] == 2
