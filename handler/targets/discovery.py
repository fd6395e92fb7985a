"""Accounts -> Regions -> clusters: what one run scans, and with whose credentials.

Every call for a target account (EKS, the token, Security Hub) is made with that account's session: the scan
role assumed in it when SCAN_ROLE_NAME is set, else the function's own credentials for its own account.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import boto3
import botocore.session
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from handler import enforcement
from handler.config import ScanRequest, Settings, require_targeted
from handler.errors import DiscoveryError
from handler.models import ClusterInfo, ClusterRef, EnforcementEvidence

SESSION_NAME = "eks-netpol-scanner"
AWS_CALLS = Config(retries={"mode": "standard", "max_attempts": 5}, connect_timeout=10, read_timeout=30)


@dataclass(frozen=True)
class Identity:
    account_id: str
    partition: str
    arn: str = ""  # the caller's ARN (for the function: its execution role's assumed-role session)


def own_identity(session: boto3.Session, region: str) -> Identity:
    """The function's own account and partition, from its credentials."""
    try:
        arn = session.client("sts", region_name=region, config=AWS_CALLS).get_caller_identity()["Arn"]
    except (ClientError, BotoCoreError) as error:
        raise DiscoveryError(f"cannot identify the function's own account: {error}") from error
    _, partition, _, _, account_id, _ = arn.split(":", 5)
    return Identity(account_id, partition, arn)


def target_accounts(session: boto3.Session, settings: Settings, request: ScanRequest, own: Identity) -> list[str]:
    """The event's accounts, each of which must be a target (EventError otherwise, before any AssumeRole), else
    every target."""
    targeted = targeted_accounts(session, settings, own)
    if not request.accounts:
        return targeted
    require_targeted(request.accounts, targeted, settings)
    return list(request.accounts)


def targeted_accounts(session: boto3.Session, settings: Settings, own: Identity) -> list[str]:
    """TARGET_ACCOUNTS, else the Organization's ACTIVE accounts, else our own."""
    if settings.use_organization:
        return organization_accounts(session, settings.default_region)
    return list(settings.target_accounts) or [own.account_id]


def target_regions(settings: Settings, request: ScanRequest) -> list[str]:
    return list(request.regions or settings.target_regions or (settings.default_region,))


def organization_accounts(session: boto3.Session, region: str) -> list[str]:
    """ACTIVE accounts of the Organization, paging until NextToken is null (empty pages happen)."""
    client = session.client("organizations", region_name=region, config=AWS_CALLS)
    accounts: list[str] = []
    token: str | None = None
    try:
        while True:
            page = client.list_accounts(**({"NextToken": token} if token else {}))
            accounts.extend(a["Id"] for a in page.get("Accounts", []) if _is_active(a))
            token = page.get("NextToken")
            if not token:
                return sorted(set(accounts))
    except (ClientError, BotoCoreError) as error:
        raise DiscoveryError(f"cannot list the Organization's accounts: {error}") from error


def _is_active(account: Mapping[str, Any]) -> bool:
    # `State` replaces `Status`, which Organizations retires in September 2026.
    return (account.get("State") or account.get("Status")) == "ACTIVE"


class AccountSessions:
    """The sessions that do each target account's work: the scan role assumed in it when SCAN_ROLE_NAME is
    set, else the function's own session for its own account. Usable from several threads: boto3 sessions are
    not thread-safe, so the STS client and the model loader they share are made once, here."""

    def __init__(self, base: boto3.Session, settings: Settings, own: Identity) -> None:
        self.base, self.settings, self.own = base, settings, own
        self._sts = base.client("sts", region_name=settings.default_region, config=AWS_CALLS)
        # New sessions share the base session's loader: service models are parsed once per process, not once per
        # account (about 50 ms for each of STS, EKS and Security Hub); config files and AWS_ENDPOINT_URL apply alike.
        self._loader = base._session.get_component("data_loader")

    def role_arn(self, account_id: str) -> str:
        """The role that does the account's work: the scan role in it, or (single-account mode) the function's."""
        if not self.settings.scan_role_name:
            return role_of_session(self.own.arn)
        return f"arn:{self.own.partition}:iam::{account_id}:role/{self.settings.scan_role_name}"

    def session(self, account_id: str) -> boto3.Session:
        if not self.settings.scan_role_name:
            if account_id != self.own.account_id:
                raise DiscoveryError(f"account {account_id} is not the function's own account "
                                     f"({self.own.account_id}) and SCAN_ROLE_NAME is not set, so there is no role "
                                     "to enter it with")
            return self.base
        role_arn = self.role_arn(account_id)
        params: dict[str, Any] = {"RoleArn": role_arn, "RoleSessionName": SESSION_NAME, "DurationSeconds": 3600}
        if self.settings.scan_role_external_id:
            params["ExternalId"] = self.settings.scan_role_external_id
        try:
            creds = self._sts.assume_role(**params)["Credentials"]
        except (ClientError, BotoCoreError) as error:
            raise DiscoveryError(f"cannot assume {role_arn}: {_error_text(error)}") from error
        core = botocore.session.Session()
        core.register_component("data_loader", self._loader)
        return boto3.Session(aws_access_key_id=creds["AccessKeyId"], aws_secret_access_key=creds["SecretAccessKey"],
                             aws_session_token=creds["SessionToken"], region_name=self.settings.default_region,
                             botocore_session=core)


def role_of_session(arn: str) -> str:
    """The role ARN behind an assumed-role session ARN (what an EKS access entry names); other ARNs as they are.
    A role's path is not in its session ARN, so a role with a path comes out without it."""
    prefix, _, rest = arn.partition(":sts::")
    account_id, _, resource = rest.partition(":")
    if not resource.startswith("assumed-role/"):
        return arn
    return f"{prefix}:iam::{account_id}:role/{resource.split('/')[1]}"


def cluster_names(eks: Any, account_id: str, region: str) -> list[str]:
    """The account and Region's clusters, each once: a name that two pages both list (a list that changed while
    it was paged) would be two tasks, scanned and published twice (a bench/fleet.py run against moto once had a
    cluster twice)."""
    try:
        names: set[str] = set()
        for page in eks.get_paginator("list_clusters").paginate():
            names.update(page.get("clusters", []))
        return sorted(names)
    except (ClientError, BotoCoreError) as error:
        raise DiscoveryError(f"cannot list EKS clusters in {account_id}/{region}: {_error_text(error)}") from error


def describe_cluster(eks: Any, ref: ClusterRef) -> ClusterInfo:
    try:
        cluster = eks.describe_cluster(name=ref.name)["cluster"]
    except (ClientError, BotoCoreError) as error:
        raise DiscoveryError(f"DescribeCluster failed: {_error_text(error)}") from error
    return ClusterInfo(
        ref=ref,
        endpoint=cluster.get("endpoint") or "",
        ca_data=(cluster.get("certificateAuthority") or {}).get("data") or "",
        version=cluster.get("version") or "",
        status=cluster.get("status") or "",
        details=_asff_details(cluster),
        vpc_cni_addon=vpc_cni_addon(eks, ref),
        # EKS Auto Mode: no aws-node, no vpc-cni add-on; its enforcement is read in the cluster (enforcement.py).
        auto_mode=bool((cluster.get("computeConfig") or {}).get("enabled")),
    )


def vpc_cni_addon(eks: Any, ref: ClusterRef) -> EnforcementEvidence:
    """The vpc-cni add-on's network policy setting. Not installed is an answer; a refused or failed call is not:
    it becomes `unknown`, and the DaemonSet read in the cluster decides."""
    try:
        addon = eks.describe_addon(clusterName=ref.name, addonName=enforcement.VPC_CNI_ADDON)["addon"]
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") == "ResourceNotFoundException":
            return enforcement.from_addon(None)
        return EnforcementEvidence(unknown=(f"eks:DescribeAddon vpc-cni failed: {_error_text(error)[:200]}",))
    except BotoCoreError as error:
        return EnforcementEvidence(unknown=(f"eks:DescribeAddon vpc-cni failed: {error}",))
    return enforcement.from_addon(addon)


def _asff_details(cluster: Mapping[str, Any]) -> dict[str, Any]:
    """DescribeCluster's answer in ASFF's AwsEksClusterDetails shape (the CA is left out: it is no finding)."""
    vpc = cluster.get("resourcesVpcConfig") or {}
    logging_setups = (cluster.get("logging") or {}).get("clusterLogging") or []
    return {
        "Arn": cluster.get("arn"),
        "Name": cluster.get("name"),
        "Version": cluster.get("version"),
        "Endpoint": cluster.get("endpoint"),
        "ClusterStatus": cluster.get("status"),
        "RoleArn": cluster.get("roleArn"),
        "ResourcesVpcConfig": {
            "SecurityGroupIds": list(vpc.get("securityGroupIds") or []),
            "SubnetIds": list(vpc.get("subnetIds") or []),
            "EndpointPublicAccess": vpc.get("endpointPublicAccess"),
        },
        "Logging": {"ClusterLogging": [{"Enabled": bool(s.get("enabled")), "Types": list(s.get("types") or [])}
                                       for s in logging_setups]},
    }


def _error_text(error: Exception) -> str:
    if isinstance(error, ClientError):
        err = error.response.get("Error", {})
        return f"{err.get('Code', 'ClientError')}: {err.get('Message', '')}"
    return str(error)
