"""A stack deployed with every default scans: the function's environment as template.yaml resolves it with its
default parameters, the real handler, a moto server over HTTP and a Kubernetes API test server over TLS."""
from __future__ import annotations

import json
from pathlib import Path

from handler.app import lambda_handler
from netpol_scan.lambda_context import LambdaContext
from netpol_scan.sandbox.aws_world import DEFAULT_ACCOUNT, DEFAULT_REGION
from netpol_scan.sandbox.kube_api import Cluster
from tests.cfn import Resolved, load_cfn
from tests.integration.conftest import BUCKET, by_namespace

ROOT = Path(__file__).resolve().parents[2]


def test_the_default_stack_scans_its_own_account_without_any_member_role(world, monkeypatch):
    queue = world.client("sqs").create_queue(QueueName="netpol-scan.fifo", Attributes={"FifoQueue": "true"})
    resolved = Resolved(load_cfn(ROOT / "template.yaml"), refs={"ReportBucket": BUCKET, "ScanQueue": queue["QueueUrl"]},
                        pseudo={"AWS::Region": DEFAULT_REGION, "AWS::AccountId": DEFAULT_ACCOUNT})
    environment = resolved.value(resolved.template["Globals"]["Function"]["Environment"]["Variables"])
    for key in ("SCAN_ROLE_NAME", "TARGET_ACCOUNTS", "FLEET_MODE", "AWS_PROFILE", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(key, raising=False)
    for key, value in {**{k: str(v) for k, v in environment.items()}, **world.env(),
                       "POWERTOOLS_TRACE_DISABLED": "true"}.items():
        monkeypatch.setenv(key, value)
    world.enable_security_hub()
    world.add_cluster(DEFAULT_ACCOUNT, DEFAULT_REGION, Cluster("shop", {"default": {}, "web": {}}))

    result = lambda_handler(json.loads((ROOT / "events" / "scheduled.json").read_text()), LambdaContext(900))

    assert (result["accounts_failed"], result["clusters_failed"], result["clusters_scanned"]) == (0, 0, 1)
    assert set(by_namespace(world.findings(), "shop")) == {"default", "web"}
    assert world.assumed_roles() == [], "single-account mode assumes no role"
