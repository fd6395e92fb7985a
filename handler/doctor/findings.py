"""The doctor's pure core: what was observed -> one check per step of a scan -> the exact fix of each gap.

Observations are plain facts gathered at the edges (probe.py): whether the account was entered, what
Security Hub's DescribeHub answered, which clusters EKS lists, whether an endpoint answered, with what status the
token was met, and what SelfSubjectAccessReview answered for each read the scanner makes. Nothing here makes a
call; every fix is text, written from those facts and the settings.
"""
from __future__ import annotations

import enum
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from typing import Any

from handler.cluster_reader import NAMESPACES_PATH, NETWORK_POLICIES_PATH
from handler.engine_reader import CIDR_GROUPS, DAEMONSETS, NODE_CLASSES, NODE_POOLS

# The Kubernetes group infra/kubernetes/rbac.yaml binds the scanner's read-only roles to (a test keeps them equal).
SCANNER_GROUP = "netpol-scanner:readers"
RBAC_FILE = "infra/kubernetes/rbac.yaml"
MEMBER_ROLE_FILE = "infra/member-role.yaml"
ACCESS_ENTRY_FILE = "infra/eks-access-entry.yaml"
HUB_NOT_ENABLED = "InvalidAccessException"  # DescribeHub's answer where Security Hub CSPM is not enabled
UNAUTHORIZED = 401


class Result(enum.StrEnum):
    OK = "ok"
    GAP = "GAP"  # the scanner cannot do this step: the fix says how to make it able to
    UNKNOWN = "unknown"  # the doctor could not find out (the answer itself was an error): the fix says why


# -- observations (facts from probe.py) ---------------------------------------------------------------------------
@dataclass(frozen=True, order=True)
class Access:
    """One permission a scan uses in a cluster: a verb on a resource, in every namespace or on one named object."""

    group: str  # "" for the core group
    resource: str
    verb: str  # "list" or "get"
    namespace: str = ""  # "" with no name: every namespace (or a cluster-scoped resource)
    name: str = ""

    @property
    def qualified(self) -> str:
        """The resource as kubectl names it: `networkpolicies.networking.k8s.io`, or `namespaces`."""
        return f"{self.resource}.{self.group}" if self.group else self.resource

    def __str__(self) -> str:
        target = f" {self.namespace}/{self.name}" if self.namespace else (f" {self.name}" if self.name else "")
        return f"{self.verb} {self.qualified}{target}"

    def review(self) -> dict[str, Any]:
        """The SelfSubjectAccessReview that asks whether the caller may do this."""
        attributes = {"group": self.group, "resource": self.resource, "verb": self.verb}
        attributes.update({k: v for k, v in (("namespace", self.namespace), ("name", self.name)) if v})
        return {"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
                "spec": {"resourceAttributes": attributes}}


def access_of(path: str) -> Access | None:
    """The permission a GET of `path` needs, or None for discovery (/api, /apis, a group or its resource list),
    which every authenticated identity may read."""
    segments = [s for s in path.split("?")[0].split("/") if s]
    if segments[:1] == ["api"] and len(segments) > 2:
        group, rest = "", segments[2:]
    elif segments[:1] == ["apis"] and len(segments) > 3:
        group, rest = segments[1], segments[3:]
    else:
        return None
    if rest[0] == "namespaces" and len(rest) >= 3:  # a namespaced resource: namespaces/<ns>/<plural>[/<name>]
        namespace, resource, name = rest[1], rest[2], (rest[3] if len(rest) > 3 else "")
    else:
        namespace, resource, name = "", rest[0], (rest[1] if len(rest) > 1 else "")
    return Access(group, resource, "get" if name else "list", namespace, name)


@dataclass(frozen=True)
class AccessAnswer:
    access: Access
    allowed: bool | None  # None: the review could not be made (error says why)
    reason: str = ""
    error: str = ""


@dataclass(frozen=True)
class ClusterProbe:
    name: str
    endpoint: str = ""
    describe_error: str = ""  # eks:DescribeCluster, or the endpoint is not https
    unreachable: str = ""  # no TLS connection (refused, timed out, name not found, certificate not trusted)
    auth_status: int | None = None  # HTTP status of the first request with the token (GET /apis)
    auth_message: str = ""
    answers: tuple[AccessAnswer, ...] = ()


@dataclass(frozen=True)
class RegionProbe:
    region: str
    hub_error_code: str = ""  # DescribeHub's error code; "" when Security Hub CSPM answered
    hub_error: str = ""
    list_error: str = ""  # eks:ListClusters
    clusters: tuple[ClusterProbe, ...] = ()


@dataclass(frozen=True)
class AccountProbe:
    account_id: str
    principal: str  # the role that does the account's work (what access entries must name)
    enter_error: str = ""
    regions: tuple[RegionProbe, ...] = ()


@dataclass(frozen=True)
class FleetProbe:
    identity: str  # who ran the doctor (in the function: its execution role's session)
    in_function: bool  # run by the scanner function itself, so with the very identity the scan uses
    scan_role_name: str | None
    external_id: bool
    identity_error: str = ""
    accounts_error: str = ""  # the Organization's accounts could not be listed
    accounts: tuple[AccountProbe, ...] = ()


# -- checks --------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Check:
    account_id: str
    region: str  # "" for a check of the whole account
    cluster: str  # "" for a check of an account or a Region
    check: str
    result: Result
    detail: str
    fix: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "result": self.result.value}


@dataclass(frozen=True)
class Diagnosis:
    checks: tuple[Check, ...]
    accounts: int = 0
    regions: int = 0
    clusters: int = 0

    @property
    def gaps(self) -> list[Check]:
        return [c for c in self.checks if c.result is not Result.OK]

    def to_dict(self) -> dict[str, Any]:
        return {"ok": not self.gaps, "gaps": len(self.gaps), "accounts": self.accounts, "regions": self.regions,
                "clusters": self.clusters, "checks": [c.to_dict() for c in self.checks]}


def diagnose(fleet: FleetProbe) -> Diagnosis:
    checks = list(_fleet_checks(fleet))
    regions = [r for a in fleet.accounts for r in a.regions]
    return Diagnosis(tuple(checks), accounts=len(fleet.accounts), regions=len(regions),
                     clusters=sum(len(r.clusters) for r in regions))


def _fleet_checks(fleet: FleetProbe) -> Iterator[Check]:
    if fleet.identity_error:
        yield Check("", "", "", "identity", Result.GAP, fleet.identity_error,
                    "give the doctor AWS credentials (the scanner function's own, or yours for a local check)")
        return
    yield Check("", "", "", "identity", Result.OK, f"checking as {fleet.identity}")
    if fleet.accounts_error or not fleet.accounts:  # only an Organization can list no account at all
        yield Check("", "", "", "list accounts", Result.GAP,
                    fleet.accounts_error or "the Organization lists no ACTIVE account: there is nothing to scan",
                    "TargetAccounts=ORGANIZATION needs the scanner in the management account or a delegated "
                    "administrator of AWS Organizations, with organizations:ListAccounts; or list the accounts: "
                    "TargetAccounts=<id>,<id>")
    for account in fleet.accounts:
        yield from _account_checks(fleet, account)


def _account_checks(fleet: FleetProbe, account: AccountProbe) -> Iterator[Check]:
    name = "assume role" if fleet.scan_role_name else "own account"
    if account.enter_error:
        yield Check(account.account_id, "", "", name, Result.GAP, account.enter_error, _enter_fix(fleet, account))
        return
    yield Check(account.account_id, "", "", name, Result.OK, f"as {account.principal}")
    for region in account.regions:
        yield from _region_checks(account, region)


def _enter_fix(fleet: FleetProbe, account: AccountProbe) -> str:
    if not fleet.scan_role_name:
        return (f"single-account mode (ScanRoleName empty) scans only the function's own account: set the "
                f"template parameter ScanRoleName=NetpolScannerRole and deploy {MEMBER_ROLE_FILE} in "
                f"{account.account_id}, or remove {account.account_id} from TargetAccounts")
    external = " ExternalId=<the stack's ScanRoleExternalId>" if fleet.external_id else ""
    fix = (f"deploy {MEMBER_ROLE_FILE} in account {account.account_id} (or fix its trust policy), with that "
           f"account's credentials:\n"
           f"  aws cloudformation deploy --template-file {MEMBER_ROLE_FILE} --stack-name netpol-scanner-member-role "
           f"--capabilities CAPABILITY_NAMED_IAM --parameter-overrides RoleName={fleet.scan_role_name} "
           f"ScannerRoleArn=<the scanner stack's output ScannerRoleArn>{external}")
    if not fleet.in_function:
        fix += (f"\nthis check ran as {fleet.identity}, and member roles trust only the scanner function's role: "
                "for the function's own answer, invoke it with events/doctor.json")
    return fix


def _region_checks(account: AccountProbe, region: RegionProbe) -> Iterator[Check]:
    where = (account.account_id, region.region, "")
    yield _hub_check(where, region)
    if region.list_error:
        yield Check(*where, "list clusters", Result.GAP, region.list_error,
                    f"the role {account.principal} needs eks:ListClusters ({MEMBER_ROLE_FILE} grants it)")
        return
    names = [c.name for c in region.clusters]
    yield Check(*where, "list clusters", Result.OK,
                f"{len(names)} listed: {', '.join(names)}" if names else "no clusters listed")
    for cluster in region.clusters:
        yield from _cluster_checks(account, region.region, cluster)


def _hub_check(where: tuple[str, str, str], region: RegionProbe) -> Check:
    name = "Security Hub CSPM"
    if not region.hub_error_code:
        return Check(*where, name, Result.OK, "enabled")
    if region.hub_error_code == HUB_NOT_ENABLED:
        return Check(*where, name, Result.GAP,
                     "Security Hub CSPM is not enabled here: findings of this Region's clusters are rejected",
                     f"with credentials of account {where[0]}:\n  aws securityhub enable-security-hub "
                     f"--no-enable-default-standards --region {where[1]}")
    return Check(*where, name, Result.UNKNOWN, f"DescribeHub failed: {region.hub_error}",
                 f"the role needs securityhub:DescribeHub on its hub to be checked ({MEMBER_ROLE_FILE} grants it)")


def _cluster_checks(account: AccountProbe, region: str, cluster: ClusterProbe) -> Iterator[Check]:
    where = (account.account_id, region, cluster.name)
    if cluster.describe_error:
        yield Check(*where, "endpoint", Result.GAP, cluster.describe_error,
                    f"the role {account.principal} needs eks:DescribeCluster ({MEMBER_ROLE_FILE} grants it)")
        return
    if cluster.unreachable:
        yield Check(*where, "endpoint", Result.GAP, cluster.unreachable, _reach_fix(cluster))
        return
    yield Check(*where, "endpoint", Result.OK, f"{cluster.endpoint} answers over TLS (CA from DescribeCluster)")
    yield _token_check(account, region, cluster)
    if cluster.auth_status == 200:
        yield from (_access_check(where, answer) for answer in cluster.answers)


def _reach_fix(cluster: ClusterProbe) -> str:
    return (f"the scanner must reach {cluster.endpoint} on TCP 443: for a private endpoint, deploy with the template "
            "parameters SubnetIds and SecurityGroupIds (subnets routed to the cluster VPC, egress 443) and allow "
            "them in the cluster security group (docs/deploy.md, Private clusters); or enable the public "
            f"endpoint: aws eks update-cluster-config --name {cluster.name} --resources-vpc-config "
            "endpointPublicAccess=true,publicAccessCidrs=<the scanner's egress addresses>")


def _token_check(account: AccountProbe, region: str, cluster: ClusterProbe) -> Check:
    where = (account.account_id, region, cluster.name)
    if cluster.auth_status == 200:
        return Check(*where, "token", Result.OK, f"authenticated as {account.principal}")
    if cluster.auth_status is None:
        return Check(*where, "token", Result.UNKNOWN, cluster.auth_message,
                     f"the credentials of {account.principal} must be able to presign sts:GetCallerIdentity")
    detail = f"HTTP {cluster.auth_status}" + (f": {cluster.auth_message}" if cluster.auth_message else "")
    if cluster.auth_status != UNAUTHORIZED:
        return Check(*where, "token", Result.UNKNOWN, f"GET /apis answered {detail}",
                     "the API server answered discovery with an error; try again, then check the cluster's health")
    principal = account.principal
    return Check(*where, "token", Result.GAP, f"token refused ({detail}): {principal} has no access entry here",
                 f"in account {account.account_id}:\n"
                 f"  aws eks create-access-entry --region {region} --cluster-name {cluster.name} "
                 f"--principal-arn {principal} --kubernetes-groups {SCANNER_GROUP}\n"
                 f"  kubectl --context <{cluster.name}> apply -f {RBAC_FILE}\n"
                 f"or the same with CloudFormation: aws cloudformation deploy --region {region} --template-file "
                 f"{ACCESS_ENTRY_FILE} --stack-name netpol-scanner-access-{cluster.name} --parameter-overrides "
                 f"ClusterName={cluster.name} PrincipalArn={principal}\n"
                 "(authentication mode CONFIG_MAP: map the role in aws-auth instead, docs/deploy.md)")


def _access_check(where: tuple[str, str, str], answer: AccessAnswer) -> Check:
    access = answer.access
    name = f"can {access}"
    if answer.allowed:
        return Check(*where, name, Result.OK, "allowed")
    if answer.allowed is None:
        return Check(*where, name, Result.UNKNOWN, f"SelfSubjectAccessReview failed: {answer.error}",
                     "the API server must answer POST /apis/authorization.k8s.io/v1/selfsubjectaccessreviews, "
                     "which every authenticated identity may create")
    reason = f" ({answer.reason})" if answer.reason else ""
    return Check(*where, name, Result.GAP, f"forbidden{reason}: {_consequence(access)}",
                 rbac_fix(where[2], [access]))


def _consequence(access: Access) -> str:
    """What the scan loses without it: the reader needs namespaces and NetworkPolicies whole; a policy engine's
    kind it cannot read marks what that kind could change; a named object is evidence for CIS 5.3.1."""
    if access in (access_of(NAMESPACES_PATH), access_of(NETWORK_POLICIES_PATH)):
        return "the cluster cannot be scanned"
    if access.name:
        return "its CIS 5.3.1 enforcement evidence is unknown"
    return _CONSEQUENCES.get(access.resource, "the verdicts these policies could change are NOT_AVAILABLE")


# Lists a scan makes for what they tell about other objects, not for policies of their own.
_CONSEQUENCES = {
    CIDR_GROUPS: "the verdicts of the Cilium policies that name a CIDR group are NOT_AVAILABLE",
    DAEMONSETS[1]: "a policy engine's agent outside its usual namespace is not found: CIS 5.3.1 evidence is unknown",
    NODE_CLASSES[1]: "on Auto Mode, whether pods no policy selects are denied is unknown: the verdicts it could "
                     "change are NOT_AVAILABLE",
    NODE_POOLS[1]: "on Auto Mode with a DefaultDeny NodeClass, which nodes deny pods no policy selects is unknown: "
                   "the verdicts it could change are NOT_AVAILABLE",
}


def rbac_fix(cluster: str, accesses: Iterable[Access]) -> str:
    """The RBAC rules that grant `accesses` to the scanner's group, and the command that applies the project's."""
    lines = [f"grant it to the group {SCANNER_GROUP} (the access entry's Kubernetes group): "
             f"kubectl --context <{cluster}> apply -f {RBAC_FILE}", "or add the rule:"]
    for access in sorted(accesses):
        lines.append("  " + rbac_rule(access))
    return "\n".join(lines)


def rbac_rule(access: Access) -> str:
    """One RBAC rule, in flow YAML: a ClusterRole rule for a list, a Role rule (by name) in the object's namespace."""
    names = f", resourceNames: [{access.name}]" if access.name else ""
    rule = (f'{{apiGroups: ["{access.group}"], resources: [{access.resource}]{names}, verbs: [{access.verb}]}}')
    if access.namespace and access.name:
        return f"Role in namespace {access.namespace}: {rule}"
    return f"ClusterRole: {rule}"


# -- rendering -----------------------------------------------------------------------------------------------------
def table(diagnosis: Diagnosis) -> str:
    """Checks as a table, then each distinct fix once, numbered, then one summary line."""
    fixes: dict[str, int] = {}
    rows = [["ACCOUNT", "REGION", "CLUSTER", "CHECK", "RESULT", "DETAIL"]]
    for c in diagnosis.checks:
        mark = ""
        if c.fix:
            mark = f" [fix {fixes.setdefault(c.fix, len(fixes) + 1)}]"
        rows.append([c.account_id or "-", c.region or "-", c.cluster or "-", c.check, c.result.value,
                     c.detail + mark])
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    lines = ["  ".join([*(cell.ljust(w) for cell, w in zip(row, widths)), row[-1]]).rstrip() for row in rows]
    if fixes:
        lines += ["", "Fixes:"]
        for text, number in fixes.items():
            first, *rest = text.splitlines()
            lines += [f"[{number}] {first}", *(f"    {line}" for line in rest)]
    gaps = diagnosis.gaps
    lines += ["", f"{len(gaps)} gap(s) in {diagnosis.accounts} account(s), {diagnosis.regions} Region(s), "
                  f"{diagnosis.clusters} cluster(s)" + ("" if gaps else ": the scanner can scan everything listed")]
    return "\n".join(lines)


__all__ = ["Access", "AccessAnswer", "AccountProbe", "Check", "ClusterProbe", "Diagnosis", "FleetProbe",
           "RegionProbe", "Result", "access_of", "diagnose", "rbac_fix", "rbac_rule", "table"]
