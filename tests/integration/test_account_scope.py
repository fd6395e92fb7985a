"""The scanner acts on its target accounts only: a manual event or a queue message naming any other account is
rejected before any AssumeRole and before anything is written. The real handler and worker against a moto server
over HTTP; what AssumeRole issued is read from moto's STS state, as CloudTrail would show it."""
from __future__ import annotations

import json

import pytest

from handler import worker
from handler.errors import EventError
from handler.run.executors import sqs_event
from handler.run.scan import ClusterTask, TaskError
from netpol_scan.lambda_context import LambdaContext
from netpol_scan.sandbox.aws_world import DEFAULT_ACCOUNT, DEFAULT_REGION
from netpol_scan.sandbox.kube_api import Cluster
from tests.integration.conftest import BUCKET, ROLE_NAME

MEMBER = "222222222222"
STRANGER = "999999999999"
RUN = ClusterTask("20261201T101500Z-0123abcd", "2026-12-01T10:15:00.000Z", MEMBER, DEFAULT_REGION, "shop")


def scan_roles_assumed(world) -> list[str]:
    return [arn for arn in world.assumed_roles() if arn.endswith(f":role/{ROLE_NAME}")]


def nothing_happened(world) -> None:
    assert world.s3_keys(BUCKET) == [], "a rejected request wrote to the report bucket"
    assert scan_roles_assumed(world) == [], "a rejected request assumed a role"


@pytest.fixture
def members(world, monkeypatch):
    monkeypatch.setenv("TARGET_ACCOUNTS", f"{DEFAULT_ACCOUNT},{MEMBER}")
    world.add_cluster(MEMBER, DEFAULT_REGION, Cluster("shop", {"default": {}}))
    world.add_cluster(STRANGER, DEFAULT_REGION, Cluster("elsewhere", {"default": {}}))
    world.enable_security_hub(MEMBER)
    world.enable_security_hub(STRANGER)


def test_an_event_naming_an_account_outside_target_accounts_is_rejected_before_any_call(world, invoke, members):
    with pytest.raises(EventError, match=f"{STRANGER} are not targets of this scanner \\(targets: TARGET_ACCOUNTS"):
        invoke({"accounts": [MEMBER, STRANGER]})
    nothing_happened(world)
    assert world.findings(STRANGER) == [] and world.findings(MEMBER) == []

    # The same check lets a target through: the role is assumed in it, and only in it.
    result = invoke({"accounts": [MEMBER]})
    assert result["clusters_scanned"] == 1
    assert scan_roles_assumed(world) == [f"arn:aws:iam::{MEMBER}:role/{ROLE_NAME}"]


def test_without_target_accounts_only_the_functions_own_account_may_be_named(world, invoke):
    world.add_cluster(MEMBER, DEFAULT_REGION, Cluster("shop", {"default": {}}))
    with pytest.raises(EventError, match="targets: the function's own account"):
        invoke({"accounts": [MEMBER]})
    nothing_happened(world)


def test_in_organization_mode_an_account_outside_the_organization_is_rejected(world, invoke, monkeypatch):
    organizations = world.client("organizations")
    organizations.create_organization(FeatureSet="ALL")
    member = organizations.create_account(AccountName="member", Email="member@example.com")
    member_id = organizations.describe_create_account_status(
        CreateAccountRequestId=member["CreateAccountStatus"]["Id"])["CreateAccountStatus"]["AccountId"]
    monkeypatch.setenv("TARGET_ACCOUNTS", "ORGANIZATION")
    with pytest.raises(EventError, match="targets: the organization's ACTIVE accounts"):
        invoke({"accounts": [STRANGER]})
    nothing_happened(world)
    result = invoke({"accounts": [member_id]})
    assert result["accounts_failed"] == 0 and scan_roles_assumed(world) == [f"arn:aws:iam::{member_id}:role/{ROLE_NAME}"]


def deliver(task_body: str) -> dict:
    """One message, on its last receive (a failure would otherwise be tried again), to the real worker."""
    event = sqs_event([RUN], receive_count=3)
    event["Records"] = [{**event["Records"][0], "body": task_body}]
    return worker.lambda_handler(event, LambdaContext(900))


def test_a_queue_message_naming_an_account_outside_the_targets_is_rejected(world, scanner_env, members):
    response = deliver(ClusterTask(RUN.run_id, RUN.started_at, STRANGER, DEFAULT_REGION,
                                         "elsewhere").to_json())
    assert len(response["batchItemFailures"]) == 1
    nothing_happened(world)
    assert world.findings(STRANGER) == []

    deliver(RUN.to_json())  # the control: a target's message is scanned in the target (its run has no manifest)
    assert scan_roles_assumed(world) == [f"arn:aws:iam::{MEMBER}:role/{ROLE_NAME}"]
    assert f"state/account={MEMBER}/region={DEFAULT_REGION}/cluster=shop.json.gz" in world.s3_keys(BUCKET)


@pytest.mark.parametrize("field, value", [
    ("account_id", "2222222222"), ("account_id", f"{MEMBER}\n"), ("region", "eu-west-1/../x"),
    ("cluster", "shop/../../state"), ("run_id", "../runs/x"), ("started_at", "yesterday"), ("deleted", "yes")])
def test_a_malformed_queue_message_is_rejected_with_the_events_patterns(world, scanner_env, members, field, value):
    body = json.dumps({**vars(RUN), field: value})
    with pytest.raises(TaskError, match=field):
        ClusterTask.from_json(body)
    assert len(deliver(body)["batchItemFailures"]) == 1
    nothing_happened(world)
