"""Static checks of the deployment templates: cfn-lint, `sam validate --lint`, the SAM transform, and
structural assertions on least privilege, the report bucket and the Kubernetes RBAC.

`sam` must be on PATH (`make test` puts .venv-sam/bin there). Without it these tests fail, unless
NETPOL_SKIP_SAM=1 is set, which skips only the tests that need SAM CLI.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from handler.engine_reader import POLICY_KINDS
from handler.models import ClusterRef
from handler.publish import s3 as s3_layout
from handler.run import fanout
from tests.cfn import Resolved, TemplateError, actions_of, load_cfn, policy_statements

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "template.yaml"
INFRA = ROOT / "infra"
CFN_TEMPLATES = [TEMPLATE, *sorted(INFRA.glob("*.yaml"))]
KUBERNETES = INFRA / "kubernetes"
RBAC = KUBERNETES / "rbac.yaml"
AWS_AUTH = KUBERNETES / "add-aws-auth-mapping.sh"

SERVICE = "eks-netpol-scanner"


@pytest.fixture(scope="module")
def template() -> dict:
    return load_cfn(TEMPLATE)


@pytest.fixture(scope="module")
def member_role() -> dict:
    return load_cfn(INFRA / "member-role.yaml")


@pytest.fixture(scope="module")
def access_entry() -> dict:
    return load_cfn(INFRA / "eks-access-entry.yaml")


def resources_of_type(tpl: dict, type_: str) -> dict:
    return {k: v for k, v in tpl["Resources"].items() if v["Type"] == type_}


def one_resource(tpl: dict, type_: str) -> tuple[str, dict]:
    found = resources_of_type(tpl, type_)
    assert len(found) == 1, f"expected one {type_}, found {sorted(found)}"
    return next(iter(found.items()))


def statements(policy_document: dict) -> list[tuple[str | None, dict]]:
    """Statements with the condition guarding them (both branches of Fn::If, AWS::NoValue dropped)."""
    out: list[tuple[str | None, dict]] = []
    raw = policy_document["Statement"]
    for item in raw if isinstance(raw, list) else [raw]:
        if isinstance(item, dict) and "Fn::If" in item:
            condition, when_true, when_false = item["Fn::If"]
            for branch, cond in ((when_true, condition), (when_false, f"!{condition}")):
                if branch != {"Ref": "AWS::NoValue"}:
                    out.append((cond, branch))
        else:
            out.append((None, item))
    return out


def as_list(value) -> list:
    return value if isinstance(value, list) else [value]


def walk_strings(node):
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for key, value in node.items():
            yield from walk_strings(key)
            yield from walk_strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from walk_strings(value)


# --- external validators ----------------------------------------------------------------------------


def cfn_lint_command() -> list[str]:
    script = Path(sys.executable).parent / "cfn-lint"
    if script.exists():
        return [str(script)]
    # cfnlint has no __main__ module; call its console entry point directly.
    return [sys.executable, "-c", "import sys; from cfnlint.runner import main; sys.exit(main())"]


def sam_executable() -> str:
    sam = shutil.which("sam")
    if sam:
        return sam
    if os.environ.get("NETPOL_SKIP_SAM") == "1":
        pytest.skip("sam not on PATH and NETPOL_SKIP_SAM=1")
    pytest.fail(
        "SAM CLI (`sam`) is not on PATH. Run `make test` (it installs .venv-sam and puts .venv-sam/bin on "
        "PATH), or `make .venv-sam/.installed` and add .venv-sam/bin to PATH; set NETPOL_SKIP_SAM=1 to skip."
    )


def sam_env() -> dict:
    return {**os.environ, "SAM_CLI_TELEMETRY": "0", "AWS_DEFAULT_REGION": os.environ.get("AWS_DEFAULT_REGION", "us-east-1")}


@pytest.mark.parametrize("path", CFN_TEMPLATES, ids=lambda p: str(p.relative_to(ROOT)))
def test_cfn_lint(path: Path):
    result = subprocess.run(
        [*cfn_lint_command(), "--", str(path)], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, f"cfn-lint {path.name}:\n{result.stdout}\n{result.stderr}"


def test_sam_validate_lint():
    result = subprocess.run(
        [sam_executable(), "validate", "--lint", "--template-file", str(TEMPLATE)],
        cwd=ROOT, capture_output=True, text=True, timeout=300, env=sam_env(),
    )
    assert result.returncode == 0, f"sam validate --lint:\n{result.stdout}\n{result.stderr}"


_TRANSLATE = r"""
import json, sys
from samtranslator.translator.transform import transform
from samtranslator.yaml_helper import yaml_parse

class NoManagedPolicies:
    def load(self):
        raise AssertionError("template must not need managed-policy lookups")

with open(sys.argv[1]) as f:
    fragment = yaml_parse(f.read())
# What `sam package` does before the transform: local code becomes an S3 object.
for resource in fragment["Resources"].values():
    if resource["Type"] == "AWS::Serverless::Function":
        resource["Properties"]["CodeUri"] = "s3://artifacts/scanner.zip"
    if resource["Type"] == "AWS::Serverless::LayerVersion":
        resource["Properties"]["ContentUri"] = "s3://artifacts/layer.zip"
params = {"AWS::Region": "us-east-1", "AWS::AccountId": "123456789012", "AWS::Partition": "aws",
          "AWS::StackName": "netpol", "AWS::StackId": "x", "AWS::URLSuffix": "amazonaws.com",
          "AWS::NotificationARNs": [], "AWS::NoValue": None}
print(json.dumps(transform(fragment, params, NoManagedPolicies())))
"""


def sam_translator_python() -> str:
    """An interpreter with samtranslator: this one, or the one running SAM CLI."""
    try:
        import samtranslator  # noqa: F401

        return sys.executable
    except ImportError:
        pass
    first_line = Path(sam_executable()).read_text(errors="replace").splitlines()[0]
    assert first_line.startswith("#!"), f"cannot find SAM CLI's interpreter from {first_line!r}"
    return first_line[2:].strip().split()[0]


@pytest.fixture(scope="module")
def translated() -> dict:
    result = subprocess.run(
        [sam_translator_python(), "-c", _TRANSLATE, str(TEMPLATE)],
        cwd=ROOT, capture_output=True, text=True, timeout=300, env=sam_env(),
    )
    assert result.returncode == 0, f"SAM transform failed:\n{result.stderr}"
    return json.loads(result.stdout)


def test_schedule_becomes_scheduler_schedule_without_retries(translated):
    _, schedule = one_resource(translated, "AWS::Scheduler::Schedule")
    props = schedule["Properties"]
    assert props["ScheduleExpression"] == {"Ref": "ScheduleExpression"}
    assert props["State"] == {"Ref": "ScheduleState"}
    assert "${AWS::StackName}" in props["Name"]["Fn::Sub"], "schedule names must not collide between stacks"
    target = props["Target"]
    assert target["Arn"] == {"Fn::GetAtt": ["ScannerFunction", "Arn"]}
    assert json.loads(target["Input"]) == {"source": "eks-netpol-scanner.schedule"}
    assert target["RetryPolicy"]["MaximumRetryAttempts"] == 0
    # The scheduler invokes asynchronously; Lambda must not retry a failed 15-minute scan either.
    _, invoke_config = one_resource(translated, "AWS::Lambda::EventInvokeConfig")
    assert invoke_config["Properties"]["MaximumRetryAttempts"] == 0


def test_translated_functions(translated):
    functions = resources_of_type(translated, "AWS::Lambda::Function")
    assert {name: f["Properties"]["Handler"] for name, f in functions.items()} == {
        "ScannerFunction": "handler.app.lambda_handler", "WorkerFunction": "handler.worker.lambda_handler"}
    for props in (f["Properties"] for f in functions.values()):
        assert props["Runtime"] == "python3.12"
        assert props["TracingConfig"] == {"Mode": "Active"}
        assert props["Role"] == {"Fn::GetAtt": ["ScannerRole", "Arn"]}
    # One scheduled run at a time (unless the account cannot reserve any concurrency); workers scale.
    assert functions["ScannerFunction"]["Properties"]["ReservedConcurrentExecutions"] == {
        "Fn::If": ["HasReservedConcurrency", 1, {"Ref": "AWS::NoValue"}]}
    assert "ReservedConcurrentExecutions" not in functions["WorkerFunction"]["Properties"]
    (mapping,) = resources_of_type(translated, "AWS::Lambda::EventSourceMapping").values()
    props = mapping["Properties"]
    assert props["EventSourceArn"] == {"Fn::GetAtt": ["ScanQueue", "Arn"]}
    assert props["FunctionName"] == {"Ref": "WorkerFunction"}
    assert (props["BatchSize"], props["FunctionResponseTypes"]) == (1, ["ReportBatchItemFailures"])
    assert props["ScalingConfig"] == {"MaximumConcurrency": {"Ref": "WorkerMaximumConcurrency"}}
    # SAM generates no role: the schedule has its own, which only this account's Scheduler may assume and which
    # may only invoke the scanner function.
    assert set(resources_of_type(translated, "AWS::IAM::Role")) == {"ScannerRole", "ScheduleRole"}
    _, schedule = one_resource(translated, "AWS::Scheduler::Schedule")
    assert schedule["Properties"]["Target"]["RoleArn"] == {"Fn::GetAtt": ["ScheduleRole", "Arn"]}
    role = translated["Resources"]["ScheduleRole"]["Properties"]
    (trust,) = role["AssumeRolePolicyDocument"]["Statement"]
    assert trust["Principal"] == {"Service": "scheduler.amazonaws.com"}
    assert trust["Condition"] == {"StringEquals": {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}}
    assert not role.get("ManagedPolicyArns")
    (invoke,) = [stmt for policy in role["Policies"] for _, stmt in statements(policy["PolicyDocument"])]
    assert as_list(invoke["Action"]) == ["lambda:InvokeFunction"]
    assert invoke["Resource"] == [{"Fn::GetAtt": ["ScannerFunction", "Arn"]}, {"Fn::Sub": "${ScannerFunction.Arn}:*"}]


def test_scan_queue_outlasts_the_worker_and_dead_letters(template):
    queue = template["Resources"]["ScanQueue"]["Properties"]
    worker = template["Resources"]["WorkerFunction"]["Properties"]
    assert queue["FifoQueue"] is True and queue["SqsManagedSseEnabled"] is True
    assert queue["VisibilityTimeout"] >= 6 * worker["Timeout"]
    assert queue["RedrivePolicy"] == {"deadLetterTargetArn": {"Fn::GetAtt": ["ScanDeadLetterQueue", "Arn"]},
                                      "maxReceiveCount": {"Ref": "ScanMaxReceives"}}
    assert template["Resources"]["ScanDeadLetterQueue"]["Properties"]["FifoQueue"] is True
    env = template["Globals"]["Function"]["Environment"]["Variables"]
    assert env["SCAN_MAX_RECEIVES"] == {"Ref": "ScanMaxReceives"}, "the worker must know when it gives up"
    assert env["SCAN_QUEUE_URL"] == {"Ref": "ScanQueue"}


# --- the scanner stack ------------------------------------------------------------------------------


def scanner_statements(template: dict) -> list[tuple[str | None, dict]]:
    role = template["Resources"]["ScannerRole"]["Properties"]
    assert not role.get("ManagedPolicyArns"), "no managed policies on the scanner role"
    out = []
    for policy in role["Policies"]:
        out += statements(policy["PolicyDocument"])
    function = template["Resources"]["ScannerFunction"]["Properties"]
    assert "Policies" not in function, "permissions belong in ScannerRole only"
    assert function["Role"] == {"Fn::GetAtt": ["ScannerRole", "Arn"]}
    return out


def test_function_properties(template):
    function = template["Resources"]["ScannerFunction"]
    props = function["Properties"]
    assert function["Metadata"]["BuildMethod"] == "makefile"
    assert props["Handler"] == "handler.app.lambda_handler"
    assert template["Globals"]["Function"]["Runtime"] == "python3.12"
    assert template["Globals"]["Function"]["Tracing"] == "Active"
    assert props["LoggingConfig"]["LogGroup"] == {"Ref": "ScannerLogGroup"}
    assert "RetentionInDays" in template["Resources"]["ScannerLogGroup"]["Properties"]
    env = {**template["Globals"]["Function"]["Environment"]["Variables"],
           **props.get("Environment", {}).get("Variables", {})}
    assert env["REPORT_BUCKET"] == {"Ref": "ReportBucket"}
    for name, param in [("TARGET_ACCOUNTS", "TargetAccounts"), ("TARGET_REGIONS", "TargetRegions"),
                        ("POWERTOOLS_LOG_LEVEL", "LogLevel"), ("POWERTOOLS_METRICS_NAMESPACE", "MetricsNamespace")]:
        assert env[name] == {"Ref": param}, name
    for name, param in [("SCAN_ROLE_NAME", "ScanRoleName"), ("SCAN_ROLE_EXTERNAL_ID", "ScanRoleExternalId")]:
        assert env[name] == {"Fn::If": ["SingleAccountMode", "", {"Ref": param}]}, name
    assert env["POWERTOOLS_SERVICE_NAME"] == SERVICE
    # The external id is in a plain environment variable: NoEcho on its parameter would promise a secrecy it
    # does not have (the template says why).
    assert "NoEcho" not in template["Parameters"]["ScanRoleExternalId"]


STACK_REFS = {"ReportBucket": "netpol-reports", "ReportBucket.Arn": "arn:aws:s3:::netpol-reports",
              "ScanQueue": "https://sqs.eu-west-1.amazonaws.com/123456789012/netpol-scan.fifo"}


def function_environment(resolved: Resolved) -> dict[str, str]:
    """What the scanner function's environment holds once deployed with these parameter values."""
    return {k: str(v) for k, v in resolved.value(resolved.template["Globals"]["Function"]["Environment"]
                                                  ["Variables"]).items()}


def scanner_actions(resolved: Resolved) -> dict[str, list[dict]]:
    by_action: dict[str, list[dict]] = {}
    for policy in resolved.resource("ScannerRole")["Policies"]:
        for statement in policy_statements(policy["PolicyDocument"]):
            for action in actions_of(statement):
                by_action.setdefault(action, []).append(statement)
    return by_action


def test_template_defaults_resolve_to_a_working_single_account_configuration(template):
    """`sam deploy --guided` with every default: the function scans its own account with its own role."""
    from handler.config import Settings

    resolved = Resolved(template, refs=STACK_REFS)
    settings = Settings.from_env({**function_environment(resolved), "AWS_REGION": "eu-west-1"})
    assert (settings.scan_role_name, settings.target_accounts, settings.use_organization) == (None, (), False)
    assert settings.target_regions == () and settings.report_bucket == "netpol-reports"
    actions = scanner_actions(resolved)
    assert "sts:AssumeRole" not in actions and "organizations:ListAccounts" not in actions
    own = "arn:aws:{}:*:123456789012:{}"
    assert [s["Resource"] for s in actions["eks:ListClusters"]] == ["*"]
    assert [s["Resource"] for s in actions["eks:DescribeCluster"]] == [own.format("eks", "cluster/*")]
    assert [s["Resource"] for s in actions["eks:DescribeAddon"]] == [own.format("eks", "addon/*/vpc-cni/*")]
    assert [s["Resource"] for s in actions["securityhub:BatchImportFindings"]] == [
        own.format("securityhub", "product/123456789012/default")]
    assert resolved.resource("ScannerFunction")["ReservedConcurrentExecutions"] == 1
    assert resolved.resource("FindingsTable") is not None


def test_target_accounts_switch_to_the_member_role_in_those_accounts_only(template):
    from handler.config import Settings

    listed = Resolved(template, {"TargetAccounts": "111111111111, 222222222222"}, refs=STACK_REFS)
    settings = Settings.from_env({**function_environment(listed), "AWS_REGION": "eu-west-1"})
    assert settings.scan_role_name == "NetpolScannerRole"
    assert settings.target_accounts == ("111111111111", "222222222222")
    (assume,) = scanner_actions(listed)["sts:AssumeRole"]
    assert assume["Resource"] == "arn:aws:iam::*:role/NetpolScannerRole"
    assert assume["Condition"] == {"StringEquals": {"aws:ResourceAccount": ["111111111111", "222222222222"]}}
    assert "eks:ListClusters" not in scanner_actions(listed), "the function's own role reads no cluster then"

    organization = Resolved(template, {"TargetAccounts": "ORGANIZATION", "OrganizationId": "o-abcdef1234"},
                            refs=STACK_REFS)
    (assume,) = scanner_actions(organization)["sts:AssumeRole"]
    assert assume["Condition"] == {"StringEquals": {"aws:ResourceOrgID": "o-abcdef1234"}}
    assert scanner_actions(organization)["organizations:ListAccounts"]


@pytest.mark.parametrize("overrides, refused", [
    ({"TargetAccounts": "111111111111", "ScanRoleName": ""}, "TargetAccounts needs ScanRoleName"),
    ({"TargetAccounts": "ORGANIZATION"}, "needs OrganizationId"),
    ({"TargetAccounts": "ORGANIZATION", "OrganizationId": "r-abcd"}, "OrganizationId"),
    ({"TargetAccounts": "all"}, "TargetAccounts"),
])
def test_parameters_a_deploy_refuses(template, overrides, refused):
    with pytest.raises(TemplateError, match=refused):
        Resolved(template, overrides, refs=STACK_REFS)


def test_vpc_network_interfaces_only_in_the_given_subnets_and_security_groups(template):
    assert "ec2:CreateNetworkInterface" not in scanner_actions(Resolved(template, refs=STACK_REFS))
    in_vpc = Resolved(template, {"SubnetIds": "subnet-a,subnet-b", "SecurityGroupIds": "sg-1"}, refs=STACK_REFS)
    create = {s["Sid"]: s for s in scanner_actions(in_vpc)["ec2:CreateNetworkInterface"]}
    assert create["VpcNetworkInterfacesInGivenSubnets"]["Condition"] == {
        "StringEquals": {"ec2:SubnetID": ["subnet-a", "subnet-b"]}}
    assert create["VpcNetworkInterfacesWithGivenSecurityGroups"]["Condition"] == {
        "StringEquals": {"ec2:SecurityGroupID": ["sg-1"]}}
    assert create["VpcNetworkInterfacesOfThisAccountAndRegion"]["Resource"] == (
        "arn:aws:ec2:eu-west-1:123456789012:network-interface/*")


def test_architecture_matches_makefile_platform(template):
    (arch,) = template["Globals"]["Function"]["Architectures"]
    makefile = (ROOT / "Makefile").read_text()
    match = re.search(r"^LAMBDA_PLATFORM\s*:?=\s*(\S+)", makefile, re.M)
    assert match, "Makefile must define LAMBDA_PLATFORM for build-ScannerFunction"
    assert match.group(1) == {"arm64": "manylinux2014_aarch64", "x86_64": "manylinux2014_x86_64"}[arch]
    assert re.search(r"^build-ScannerFunction build-WorkerFunction:", makefile, re.M)
    assert re.search(r"^build-DependenciesLayer:", makefile, re.M)


def test_both_functions_share_one_dependencies_layer_for_their_architecture(template):
    (arch,) = template["Globals"]["Function"]["Architectures"]
    layer = template["Resources"]["DependenciesLayer"]
    assert layer["Type"] == "AWS::Serverless::LayerVersion"
    assert layer["Metadata"]["BuildMethod"] == "makefile"
    assert layer["Metadata"]["BuildArchitecture"] == arch
    assert layer["Properties"]["CompatibleArchitectures"] == [arch]
    assert layer["Properties"]["CompatibleRuntimes"] == [template["Globals"]["Function"]["Runtime"]]
    functions = resources_of_type(template, "AWS::Serverless::Function")
    assert set(functions) == {"ScannerFunction", "WorkerFunction"}
    for name, function in functions.items():
        layers = function["Properties"].get("Layers", template["Globals"]["Function"].get("Layers"))
        assert layers == [{"Ref": "DependenciesLayer"}], name


def test_scanner_policies_have_no_wildcard_actions(template):
    for _, stmt in scanner_statements(template):
        assert stmt["Effect"] == "Allow"
        for action in as_list(stmt["Action"]):
            assert "*" not in action, f"wildcard action {action!r} in {stmt.get('Sid')}"
            assert action != "s3:*"


def test_scanner_permissions_are_exactly_the_calls_made(template):
    by_action: dict[str, list[tuple[str | None, dict]]] = {}
    for cond, stmt in scanner_statements(template):
        for action in as_list(stmt["Action"]):
            by_action.setdefault(action, []).append((cond, stmt))
    assert set(by_action) == {
        "logs:CreateLogStream", "logs:PutLogEvents", "xray:PutTraceSegments", "xray:PutTelemetryRecords",
        "s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:ListBucket", "sts:AssumeRole", "organizations:ListAccounts",
        "eks:ListClusters", "eks:DescribeCluster", "securityhub:BatchImportFindings", "eks:DescribeAddon",
        "ssm:GetParameter", "sqs:SendMessage", "sqs:ReceiveMessage", "sqs:DeleteMessage",
        "sqs:GetQueueAttributes", "sqs:ChangeMessageVisibility", "ec2:CreateNetworkInterface",
        "ec2:DescribeNetworkInterfaces", "ec2:DeleteNetworkInterface", "ec2:AssignPrivateIpAddresses",
        "ec2:UnassignPrivateIpAddresses", "securityhub:DescribeHub",
    }
    for action in ("ec2:CreateNetworkInterface", "ec2:DescribeNetworkInterfaces", "ec2:DeleteNetworkInterface"):
        assert {cond for cond, _ in by_action[action]} == {"InVpc"}, "ENI permissions only for functions in a VPC"
    assert template["Globals"]["Function"]["VpcConfig"]["Fn::If"][0] == "InVpc"
    assert [s["Resource"] for _, s in by_action["ec2:DescribeNetworkInterfaces"]] == ["*"]
    for action in ("ec2:CreateNetworkInterface", "ec2:DeleteNetworkInterface", "ec2:AssignPrivateIpAddresses",
                   "ec2:UnassignPrivateIpAddresses"):
        assert all(s["Resource"] != "*" for _, s in by_action[action]), action
    for action in ("sqs:SendMessage", "sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:ChangeMessageVisibility"):
        ((_, queue),) = by_action[action]
        assert queue["Resource"] == {"Fn::GetAtt": ["ScanQueue", "Arn"]}, action
    ((cond, addon),) = by_action["eks:DescribeAddon"]  # CIS 5.3.1: only the vpc-cni add-on
    assert cond == "SingleAccountMode"
    assert addon["Resource"] == {"Fn::Sub": "arn:${AWS::Partition}:eks:*:${AWS::AccountId}:addon/*/vpc-cni/*"}
    ((cond, exemptions),) = by_action["ssm:GetParameter"]
    assert cond == "HasExemptionsParameter"
    assert exemptions["Resource"] == {"Fn::Sub": "arn:${AWS::Partition}:ssm:${AWS::Region}:${AWS::AccountId}:"
                                                 "parameter/eks-netpol-scanner/*"}
    ((cond, assume),) = by_action["sts:AssumeRole"]
    assert cond == "HasScanRole"
    assert assume["Resource"] == {"Fn::Sub": "arn:${AWS::Partition}:iam::*:role/${ScanRoleName}"}
    assert assume["Condition"]["Fn::If"][0] == "ListOrganization"  # and scoped to the targets: below
    ((cond, _),) = by_action["organizations:ListAccounts"]
    assert cond == "ListOrganization"
    for action in ("eks:ListClusters", "eks:DescribeCluster", "securityhub:BatchImportFindings",
                   "securityhub:DescribeHub"):
        ((cond, _),) = by_action[action]
        assert cond == "SingleAccountMode", action
    ((_, hub),) = by_action["securityhub:DescribeHub"]  # the doctor's check, of this account's own hub only
    assert hub["Resource"] == {"Fn::Sub": "arn:${AWS::Partition}:securityhub:*:${AWS::AccountId}:hub/default"}
    conditions = template["Conditions"]
    assert conditions["SingleAccountMode"] == {"Fn::Equals": [{"Ref": "TargetAccounts"}, ""]}
    assert conditions["HasScanRole"] == {"Fn::Not": [{"Fn::Condition": "SingleAccountMode"}]}
    assert conditions["ListOrganization"] == {"Fn::Equals": [{"Ref": "TargetAccounts"}, "ORGANIZATION"]}
    ((_, objects),) = [s for s in by_action["s3:GetObject"]]
    assert objects["Resource"] == {"Fn::Sub": "${ReportBucket.Arn}/*"}
    # Writes only where the functions write: never config/, where the exemptions document lives.
    ((_, writes),) = by_action["s3:PutObject"]
    written = [s3_layout.STATE_PREFIX, s3_layout.findings_key(ClusterRef("1", "r", "c"), "d", "r"),
               s3_layout.report_key("d", "r"), fanout.FLEET_PREFIX]
    assert writes["Resource"] == [{"Fn::Sub": "${ReportBucket.Arn}/" + key.split("/")[0] + "/*"} for key in written]
    ((_, forget),) = by_action["s3:DeleteObject"]  # only cluster state, of clusters gone
    assert forget["Resource"] == {"Fn::Sub": "${ReportBucket.Arn}/state/*"}
    ((_, listing),) = by_action["s3:ListBucket"]
    assert listing["Resource"] == {"Fn::GetAtt": ["ReportBucket", "Arn"]}
    assert "Condition" not in listing  # a prefix condition turns a missing state object into AccessDenied
    ((_, logs),) = {id(s): (c, s) for c, s in by_action["logs:PutLogEvents"]}.values()
    assert logs["Resource"] == [{"Fn::GetAtt": ["ScannerLogGroup", "Arn"]}, {"Fn::GetAtt": ["WorkerLogGroup", "Arn"]}]


def test_report_bucket_is_private_encrypted_and_tls_only(template):
    name, bucket = one_resource(template, "AWS::S3::Bucket")
    props = bucket["Properties"]
    assert props["PublicAccessBlockConfiguration"] == {
        "BlockPublicAcls": True, "BlockPublicPolicy": True, "IgnorePublicAcls": True, "RestrictPublicBuckets": True,
    }
    assert props["OwnershipControls"]["Rules"] == [{"ObjectOwnership": "BucketOwnerEnforced"}]
    assert props["VersioningConfiguration"]["Status"] == "Enabled"
    (encryption,) = props["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    assert encryption["ServerSideEncryptionByDefault"]["SSEAlgorithm"] in ("aws:kms", "AES256")
    assert encryption["BucketKeyEnabled"] is True
    assert bucket["DeletionPolicy"] == "Retain"

    _, bucket_policy = one_resource(template, "AWS::S3::BucketPolicy")
    assert bucket_policy["Properties"]["Bucket"] == {"Ref": name}
    tls = [
        stmt for _, stmt in statements(bucket_policy["Properties"]["PolicyDocument"])
        if stmt.get("Condition", {}).get("Bool", {}).get("aws:SecureTransport") in ("false", False)
    ]
    assert len(tls) == 1
    (deny,) = tls
    assert deny["Effect"] == "Deny" and deny["Principal"] == "*" and deny["Action"] == "s3:*"
    assert {"Fn::GetAtt": [name, "Arn"]} in deny["Resource"]
    assert {"Fn::Sub": "${" + name + ".Arn}/*"} in deny["Resource"]


def test_lifecycle_never_expires_current_state_objects(template):
    _, bucket = one_resource(template, "AWS::S3::Bucket")
    rules = bucket["Properties"]["LifecycleConfiguration"]["Rules"]
    by_prefix: dict[str, list[dict]] = {}
    for rule in rules:
        assert rule["Status"] == "Enabled"
        assert "Filter" not in rule and "TagFilters" not in rule, "rules select objects by Prefix only"
        prefix = rule.get("Prefix", "")
        by_prefix.setdefault(prefix, []).append(rule)
        covers_state = "state/".startswith(prefix) or prefix.startswith("state/")
        if covers_state:
            assert "ExpirationInDays" not in rule and "ExpirationDate" not in rule, rule["Id"]
            assert "Transitions" not in rule, rule["Id"]
    for prefix in ("runs/", "findings/"):
        (rule,) = by_prefix[prefix]
        assert rule["ExpirationInDays"] == {"Ref": "ReportRetentionDays"}
    (everything,) = by_prefix[""]
    assert everything["NoncurrentVersionExpiration"]["NoncurrentDays"] == 30
    assert everything["AbortIncompleteMultipartUpload"]["DaysAfterInitiation"] >= 1


def test_alarms(template):
    alarms = {name: a["Properties"] for name, a in resources_of_type(template, "AWS::CloudWatch::Alarm").items()}
    assert {a["MetricName"] for a in alarms.values()} == {"Errors", "ClustersFailed", "AccountsFailed",
                                                          "FindingsRejected", "ApproximateNumberOfMessagesVisible"}
    errors = [a for a in alarms.values() if a["MetricName"] == "Errors"]
    assert {e["Dimensions"][0]["Value"]["Ref"] for e in errors} == {"ScannerFunction", "WorkerFunction"}
    for alarm in errors:
        assert alarm["Namespace"] == "AWS/Lambda"
        assert (alarm["Threshold"], alarm["ComparisonOperator"], alarm["EvaluationPeriods"]) == (
            1, "GreaterThanOrEqualToThreshold", 1)
    for alarm in (a for a in alarms.values() if a["MetricName"] in ("ClustersFailed", "AccountsFailed")):
        assert alarm["Namespace"] == {"Ref": "MetricsNamespace"}
        assert alarm["Dimensions"] == [{"Name": "service", "Value": SERVICE}]
        assert (alarm["Threshold"], alarm["ComparisonOperator"]) == (0, "GreaterThanThreshold")
    rejected = alarms["FindingsRejectedAlarm"]  # a metric the function emits from every run summary
    assert rejected["Namespace"] == {"Ref": "MetricsNamespace"}
    assert rejected["Dimensions"] == [{"Name": "service", "Value": SERVICE}]
    assert (rejected["Threshold"], rejected["ComparisonOperator"]) == ({"Ref": "FindingsRejectedAlarmThreshold"},
                                                                        "GreaterThanThreshold")
    assert template["Parameters"]["FindingsRejectedAlarmThreshold"]["Default"] == 0
    from handler.observability import SUMMARY_METRICS
    assert ("FindingsRejected", "findings_rejected") in SUMMARY_METRICS
    dlq = alarms["DeadLetterAlarm"]
    assert dlq["Dimensions"] == [{"Name": "QueueName", "Value": {"Fn::GetAtt": ["ScanDeadLetterQueue", "QueueName"]}}]
    assert (dlq["Threshold"], dlq["ComparisonOperator"]) == (0, "GreaterThanThreshold")
    for alarm in alarms.values():
        assert alarm["TreatMissingData"] == "notBreaching"
        assert alarm["AlarmActions"] == {"Fn::If": ["HasAlarmTopic", [{"Ref": "AlarmTopicArn"}], {"Ref": "AWS::NoValue"}]}


def test_outputs(template):
    outputs = template["Outputs"]
    assert outputs["ScannerRoleArn"]["Value"] == {"Fn::GetAtt": ["ScannerRole", "Arn"]}
    assert outputs["ScannerFunctionArn"]["Value"] == {"Fn::GetAtt": ["ScannerFunction", "Arn"]}
    assert outputs["ScannerFunctionName"]["Value"] == {"Ref": "ScannerFunction"}
    assert outputs["ReportBucketName"]["Value"] == {"Ref": "ReportBucket"}


@pytest.mark.parametrize("path", CFN_TEMPLATES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_hard_coded_partition(path: Path):
    for text in walk_strings(load_cfn(path)["Resources"]):
        assert "arn:aws:" not in text, f"use ${{AWS::Partition}}: {text!r}"


# --- member account and cluster access --------------------------------------------------------------


def test_member_role_trusts_only_the_scanner_role(member_role):
    _, role = one_resource(member_role, "AWS::IAM::Role")
    props = role["Properties"]
    assert props["RoleName"] == {"Ref": "RoleName"}
    assert member_role["Parameters"]["RoleName"]["Default"] == "NetpolScannerRole"
    assert props["MaxSessionDuration"] == 3600
    (trust,) = props["AssumeRolePolicyDocument"]["Statement"]
    assert trust["Effect"] == "Allow"
    assert trust["Principal"] == {"AWS": {"Ref": "ScannerRoleArn"}}
    assert as_list(trust["Action"]) == ["sts:AssumeRole"]
    assert trust["Condition"] == {
        "Fn::If": ["HasExternalId", {"StringEquals": {"sts:ExternalId": {"Ref": "ExternalId"}}}, {"Ref": "AWS::NoValue"}]
    }
    pattern = member_role["Parameters"]["ScannerRoleArn"]["AllowedPattern"]
    assert re.fullmatch(pattern, "arn:aws:iam::123456789012:role/netpol-ScannerRole-ABC")
    assert not re.fullmatch(pattern, "*")
    assert not re.fullmatch(pattern, "arn:aws:iam::123456789012:root")


def test_member_role_permissions(member_role):
    _, role = one_resource(member_role, "AWS::IAM::Role")
    assert not role["Properties"].get("ManagedPolicyArns")
    found = {}
    for policy in role["Properties"]["Policies"]:
        for cond, stmt in statements(policy["PolicyDocument"]):
            assert cond is None and stmt["Effect"] == "Allow"
            for action in as_list(stmt["Action"]):
                found[action] = stmt["Resource"]
    assert found == {
        "eks:ListClusters": "*",
        "eks:DescribeCluster": {"Fn::Sub": "arn:${AWS::Partition}:eks:*:${AWS::AccountId}:cluster/*"},
        "eks:DescribeAddon": {"Fn::Sub": "arn:${AWS::Partition}:eks:*:${AWS::AccountId}:addon/*/vpc-cni/*"},
        "securityhub:BatchImportFindings": {
            "Fn::Sub": "arn:${AWS::Partition}:securityhub:*:${AWS::AccountId}:product/${AWS::AccountId}/default"
        },
        "securityhub:DescribeHub": {"Fn::Sub": "arn:${AWS::Partition}:securityhub:*:${AWS::AccountId}:hub/default"},
    }


def test_access_entry_defaults_to_the_projects_own_cluster_role(access_entry):
    _, entry = one_resource(access_entry, "AWS::EKS::AccessEntry")
    props = entry["Properties"]
    assert props["Type"] == "STANDARD"
    assert props["PrincipalArn"] == {"Ref": "PrincipalArn"}
    assert access_entry["Parameters"]["AccessMode"]["Default"] == "RbacGroup"
    default = Resolved(access_entry, {"ClusterName": "c", "PrincipalArn": "arn:aws:iam::123456789012:role/R"})
    resolved = default.resource("ScannerAccessEntry")
    assert resolved["KubernetesGroups"] == [READER_GROUP] and "AccessPolicies" not in resolved
    # AmazonEKSViewPolicy stays an opt-in, with its trade-off written beside it.
    view = Resolved(access_entry, {"ClusterName": "c", "PrincipalArn": "arn:aws:iam::123456789012:role/R",
                                   "AccessMode": "EKSViewPolicy"}).resource("ScannerAccessEntry")
    assert "KubernetesGroups" not in view
    assert view["AccessPolicies"] == [{
        "PolicyArn": "arn:aws:eks::aws:cluster-access-policy/AmazonEKSViewPolicy", "AccessScope": {"Type": "cluster"}}]
    header = (INFRA / "eks-access-entry.yaml").read_text()
    assert "trade-off" in header and "NOT_AVAILABLE" in header
    pattern = access_entry["Parameters"]["PrincipalArn"]["AllowedPattern"]
    assert re.fullmatch(pattern, "arn:aws:iam::123456789012:role/NetpolScannerRole")
    assert re.fullmatch(pattern, "arn:aws-us-gov:iam::123456789012:role/path/NetpolScannerRole")
    assert not re.fullmatch(pattern, "arn:aws:sts::123456789012:assumed-role/NetpolScannerRole/session")
    assert not re.fullmatch(pattern, "arn:aws:iam::123456789012:user/alice")


READER_GROUP = "netpol-scanner:readers"
# What the scanner reads, group -> resources (handler/engine_reader.py, handler/cluster_reader.py, and the kinds
# of issue 9: ClusterNetworkPolicy, ApplicationNetworkPolicy, CiliumCIDRGroup, NodeClass, NodePool).
READ_KINDS = {
    "": {"namespaces"}, "networking.k8s.io": {"networkpolicies"},
    "cilium.io": {"ciliumnetworkpolicies", "ciliumclusterwidenetworkpolicies", "ciliumcidrgroups"},
    "projectcalico.org": {"networkpolicies", "globalnetworkpolicies"},
    "crd.projectcalico.org": {"networkpolicies", "globalnetworkpolicies"},
    "policy.networking.k8s.io": {"adminnetworkpolicies", "baselineadminnetworkpolicies", "clusternetworkpolicies"},
    "networking.k8s.aws": {"clusternetworkpolicies", "applicationnetworkpolicies"},
    "eks.amazonaws.com": {"nodeclasses"}, "karpenter.sh": {"nodepools"},
}


def rbac_documents() -> dict[str, dict]:
    docs = [d for d in yaml.safe_load_all(RBAC.read_text()) if d]
    kinds = {d["kind"]: d for d in docs}
    assert len(kinds) == len(docs) and sorted(kinds) == ["ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"]
    return kinds


def test_cluster_role_reads_only_namespaces_policy_kinds_and_enforcement_objects_by_name():
    kinds = rbac_documents()
    role = kinds["ClusterRole"]
    assert role["metadata"]["name"] == "netpol-scanner-read"
    listed: dict[str, set[str]] = {}
    named = []
    for rule in role["rules"]:
        assert set(rule) <= {"apiGroups", "resources", "verbs", "resourceNames"}, "no nonResourceURLs"
        assert "secrets" not in rule["resources"] and "*" not in rule["resources"] + rule["apiGroups"]
        if "resourceNames" in rule:
            assert rule["verbs"] == ["get"], "named objects are read one by one, never listed"
            named.append((rule["apiGroups"], rule["resources"], sorted(rule["resourceNames"])))
            continue
        if rule["resources"] == ["daemonsets"]:  # agents found by label across namespaces: list, no get
            assert (rule["apiGroups"], rule["verbs"]) == (["apps"], ["list"])
            continue
        assert rule["verbs"] == ["get", "list"], "get and list only: no watch"
        for group in rule["apiGroups"]:
            listed.setdefault(group, set()).update(rule["resources"])
    assert listed == READ_KINDS
    assert {(group, plural) for group, kinds in POLICY_KINDS.items() for plural, _, _ in kinds} <= {
        (group, plural) for group, plurals in listed.items() for plural in plurals}, "every policy kind read is granted"
    assert named == [(["apps"], ["daemonsets"], ["aws-node", "calico-node", "cilium"])]
    binding = kinds["ClusterRoleBinding"]
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "netpol-scanner-read"}
    assert binding["subjects"] == [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": READER_GROUP}]
    enforcement = kinds["Role"]  # CIS 5.3.1: the VPC CNI's ConfigMap, by name, in kube-system only
    assert enforcement["metadata"]["namespace"] == "kube-system"
    assert [(r["apiGroups"], r["resources"], r["resourceNames"], r["verbs"]) for r in enforcement["rules"]] == [
        ([""], ["configmaps"], ["amazon-vpc-cni"], ["get"])]
    assert kinds["RoleBinding"]["subjects"] == binding["subjects"]
    assert kinds["RoleBinding"]["roleRef"]["name"] == enforcement["metadata"]["name"]


def kubectl_reads(directory: Path) -> list[Path]:
    """The files `kubectl apply -f <directory>` reads: .json, .yaml and .yml (kubectl's FileExtensions)."""
    return sorted(p for p in directory.rglob("*") if p.suffix in (".json", ".yaml", ".yml"))


def test_aws_auth_cannot_be_applied_from_infra_kubernetes():
    for path in kubectl_reads(KUBERNETES):
        for document in yaml.safe_load_all(path.read_text()):
            assert document["kind"] != "ConfigMap", f"{path.name}: kubectl apply would replace a ConfigMap"
            assert document["metadata"]["name"] != "aws-auth", path.name
    assert AWS_AUTH.suffix == ".sh" and AWS_AUTH not in kubectl_reads(KUBERNETES)


def fake_eksctl(tmp_path: Path) -> dict[str, str]:
    """An eksctl on PATH that prints its arguments, one a line."""
    (tmp_path / "eksctl").write_text('#!/bin/sh\nfor a in "$@"; do echo "$a"; done\n')
    (tmp_path / "eksctl").chmod(0o755)
    return {**os.environ, "PATH": f"{tmp_path}:{os.environ['PATH']}"}


def test_aws_auth_mapping_script_adds_one_entry_with_eksctl(tmp_path):
    env = fake_eksctl(tmp_path)
    role = "arn:aws:iam::123456789012:role/NetpolScannerRole"
    done = subprocess.run(["sh", str(AWS_AUTH), "shop", "eu-west-1", role], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["create", "iamidentitymapping", "--cluster", "shop", "--region", "eu-west-1",
                                        "--arn", role, "--username", "netpol-scanner", "--group", READER_GROUP]
    for bad in (["shop", "eu-west-1"], ["shop", "eu-west-1", "arn:aws:sts::123456789012:assumed-role/R/s"]):
        refused = subprocess.run(["sh", str(AWS_AUTH), *bad], capture_output=True, text=True, env=env)
        assert refused.returncode == 2 and refused.stdout == "", bad


# --- the operator's dashboard and the Athena table ------------------------------------------------------------


def test_dashboard_body_is_json_of_the_metrics_the_function_emits(template):
    body, names = template["Resources"]["ScannerDashboard"]["Properties"]["DashboardBody"]["Fn::Sub"], set()
    for name in re.findall(r"\$\{([A-Za-z0-9:.]+)\}", body):
        names.add(name)
        assert name.split(".")[0] in {*template["Parameters"], *template["Resources"], "AWS::Region"}, name
    values = {"AWS::Region": "eu-west-1", "MetricsNamespace": "NetpolScanner", "AlarmPeriodSeconds": "86400"}
    dashboard = json.loads(re.sub(r"\$\{([A-Za-z0-9:.]+)\}", lambda m: values.get(m.group(1), "x"), body))
    titles = [w["properties"]["title"] for w in dashboard["widgets"]]
    assert titles[:4] == ["Failing namespaces by account", "Clusters scanned and failed",
                          "Findings imported and rejected", "Scan duration (seconds)"]
    emitted = "".join(p.read_text() for p in (ROOT / "handler").rglob("*.py"))
    custom = [m[1] for w in dashboard["widgets"] for m in w["properties"].get("metrics", [])
              if m[0] == values["MetricsNamespace"]]
    assert set(custom) >= {"NamespacesFailing", "ClustersScanned", "ClustersFailed", "FindingsImported",
                           "FindingsRejected", "ScanDuration"}
    for metric in custom:
        assert f'"{metric}"' in emitted, f"the dashboard shows {metric}, which the function never emits"
    search = dashboard["widgets"][0]["properties"]["metrics"][0][0]["expression"]
    assert search.startswith("SEARCH('{NetpolScanner,account,service} MetricName=\"NamespacesFailing\"', 'Sum'")
    alarms = dashboard["widgets"][-1]["properties"]["alarms"]
    assert len(alarms) == len(resources_of_type(template, "AWS::CloudWatch::Alarm"))


def test_athena_table_projects_the_findings_layout(template):
    database = template["Resources"]["AthenaDatabaseResource"]
    table = template["Resources"]["FindingsTable"]
    assert database["Condition"] == table["Condition"] == "CreateAthenaTable"
    assert template["Parameters"]["AthenaTable"]["AllowedValues"] == ["Enabled", "Disabled"]
    table_input = table["Properties"]["TableInput"]
    assert [k["Name"] for k in table_input["PartitionKeys"]] == ["date", "account", "region"]
    params = table_input["Parameters"]
    assert params["projection.enabled"] == "true"
    assert (params["projection.date.type"], params["projection.date.format"]) == ("date", "yyyy-MM-dd")
    assert params["storage.location.template"] == {
        "Fn::Sub": "s3://${ReportBucket}/findings/date=${!date}/account=${!account}/region=${!region}/"}
    from handler.publish.s3 import findings_key
    from handler.models import ClusterRef

    key = findings_key(ClusterRef("123456789012", "eu-west-1", "c"), "2026-01-02", "r")
    assert key.startswith("findings/date=2026-01-02/account=123456789012/region=eu-west-1/")
    storage = table_input["StorageDescriptor"]
    assert storage["Location"] == {"Fn::Sub": "s3://${ReportBucket}/findings/"}
    assert storage["SerdeInfo"]["SerializationLibrary"] == "org.openx.data.jsonserde.JsonSerDe"
    assert all(c["Name"] == c["Name"].lower() for c in storage["Columns"])
    assert params["projection.account.type"] == {"Fn::If": ["AthenaAccountsInjected", "injected", "enum"]}


def test_deploy_doc_lists_every_template_parameter_with_its_default(template):
    text = (ROOT / "docs" / "deploy.md").read_text()
    table = text[text.index("## Parameters (template.yaml)"):]
    rows = dict(re.findall(r"^\| (\w+) \| ([^|]*) \|", table, re.M)[1:])
    assert set(rows) == set(template["Parameters"])
    for name, spec in template["Parameters"].items():
        default = str(spec.get("Default", ""))
        assert rows[name].strip().strip('"') == default, name
