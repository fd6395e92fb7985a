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

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "template.yaml"
INFRA = ROOT / "infra"
CFN_TEMPLATES = [TEMPLATE, *sorted(INFRA.glob("*.yaml"))]
RBAC = INFRA / "kubernetes" / "rbac.yaml"
AWS_AUTH = INFRA / "kubernetes" / "aws-auth-snippet.yaml"

SERVICE = "eks-netpol-scanner"


# --- loading CloudFormation YAML (short tags such as !Ref, !Sub, !GetAtt) ---------------------------


class CfnLoader(yaml.SafeLoader):
    """SafeLoader that turns CloudFormation short tags into their long form ({"Fn::Sub": ...})."""


def _construct_tag(loader: CfnLoader, tag_suffix: str, node: yaml.Node):
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    if tag_suffix == "Ref":
        return {"Ref": value}
    if tag_suffix == "GetAtt" and isinstance(value, str):
        value = value.split(".", 1)
    return {f"Fn::{tag_suffix}": value}


CfnLoader.add_multi_constructor("!", _construct_tag)


def load_cfn(path: Path) -> dict:
    return yaml.load(path.read_text(), Loader=CfnLoader)  # noqa: S506 - SafeLoader subclass


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
        assert "ReservedConcurrentExecutions" not in props
    (mapping,) = resources_of_type(translated, "AWS::Lambda::EventSourceMapping").values()
    props = mapping["Properties"]
    assert props["EventSourceArn"] == {"Fn::GetAtt": ["ScanQueue", "Arn"]}
    assert props["FunctionName"] == {"Ref": "WorkerFunction"}
    assert (props["BatchSize"], props["FunctionResponseTypes"]) == (1, ["ReportBatchItemFailures"])
    assert props["ScalingConfig"] == {"MaximumConcurrency": {"Ref": "WorkerMaximumConcurrency"}}
    # The only generated role is the scheduler's, and it may only invoke the function.
    for name, role in resources_of_type(translated, "AWS::IAM::Role").items():
        if name == "ScannerRole":
            continue
        for policy in role["Properties"].get("Policies", []):
            for _, stmt in statements(policy["PolicyDocument"]):
                assert as_list(stmt["Action"]) == ["lambda:InvokeFunction"], (name, stmt)
        assert not role["Properties"].get("ManagedPolicyArns"), name


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
    assert "ReservedConcurrentExecutions" not in props
    assert props["LoggingConfig"]["LogGroup"] == {"Ref": "ScannerLogGroup"}
    assert "RetentionInDays" in template["Resources"]["ScannerLogGroup"]["Properties"]
    env = {**template["Globals"]["Function"]["Environment"]["Variables"],
           **props.get("Environment", {}).get("Variables", {})}
    assert env["REPORT_BUCKET"] == {"Ref": "ReportBucket"}
    for name, param in [("SCAN_ROLE_NAME", "ScanRoleName"), ("SCAN_ROLE_EXTERNAL_ID", "ScanRoleExternalId"),
                        ("TARGET_ACCOUNTS", "TargetAccounts"), ("TARGET_REGIONS", "TargetRegions"),
                        ("POWERTOOLS_LOG_LEVEL", "LogLevel"), ("POWERTOOLS_METRICS_NAMESPACE", "MetricsNamespace")]:
        assert env[name] == {"Ref": param}, name
    assert env["POWERTOOLS_SERVICE_NAME"] == SERVICE
    assert template["Parameters"]["ScanRoleExternalId"]["NoEcho"] is True


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
        "s3:GetObject", "s3:PutObject", "s3:ListBucket", "sts:AssumeRole", "organizations:ListAccounts",
        "eks:ListClusters", "eks:DescribeCluster", "securityhub:BatchImportFindings", "eks:DescribeAddon",
        "ssm:GetParameter", "sqs:SendMessage", "sqs:ReceiveMessage", "sqs:DeleteMessage",
        "sqs:GetQueueAttributes", "sqs:ChangeMessageVisibility", "ec2:CreateNetworkInterface",
        "ec2:DescribeNetworkInterfaces", "ec2:DeleteNetworkInterface", "ec2:AssignPrivateIpAddresses",
        "ec2:UnassignPrivateIpAddresses",
    }
    ((cond, _),) = by_action["ec2:CreateNetworkInterface"]
    assert cond == "InVpc", "ENI permissions only for functions placed in a VPC"
    assert template["Globals"]["Function"]["VpcConfig"]["Fn::If"][0] == "InVpc"
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
    ((cond, _),) = by_action["organizations:ListAccounts"]
    assert cond == "ListOrganization"
    for action in ("eks:ListClusters", "eks:DescribeCluster", "securityhub:BatchImportFindings"):
        ((cond, _),) = by_action[action]
        assert cond == "SingleAccountMode", action
    conditions = template["Conditions"]
    assert conditions["HasScanRole"] == {"Fn::Not": [{"Fn::Equals": [{"Ref": "ScanRoleName"}, ""]}]}
    assert conditions["SingleAccountMode"] == {"Fn::Equals": [{"Ref": "ScanRoleName"}, ""]}
    assert conditions["ListOrganization"] == {"Fn::Equals": [{"Ref": "TargetAccounts"}, "ORGANIZATION"]}
    ((_, objects),) = [s for s in by_action["s3:GetObject"]]
    assert objects["Resource"] == {"Fn::Sub": "${ReportBucket.Arn}/*"}
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
                                                          "ApproximateNumberOfMessagesVisible"}
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
    }


def test_access_entry(access_entry):
    _, entry = one_resource(access_entry, "AWS::EKS::AccessEntry")
    props = entry["Properties"]
    assert props["Type"] == "STANDARD"
    assert props["PrincipalArn"] == {"Ref": "PrincipalArn"}
    policies = props["AccessPolicies"]["Fn::If"][1]
    assert policies == [{
        "PolicyArn": {"Fn::Sub": "arn:${AWS::Partition}:eks::aws:cluster-access-policy/AmazonEKSViewPolicy"},
        "AccessScope": {"Type": "cluster"},
    }]
    assert access_entry["Parameters"]["AccessMode"]["Default"] == "EKSViewPolicy"
    pattern = access_entry["Parameters"]["PrincipalArn"]["AllowedPattern"]
    assert re.fullmatch(pattern, "arn:aws:iam::123456789012:role/NetpolScannerRole")
    assert re.fullmatch(pattern, "arn:aws-us-gov:iam::123456789012:role/path/NetpolScannerRole")
    assert not re.fullmatch(pattern, "arn:aws:sts::123456789012:assumed-role/NetpolScannerRole/session")
    assert not re.fullmatch(pattern, "arn:aws:iam::123456789012:user/alice")


def test_cluster_role_reads_only_namespaces_and_policies_and_enforcement_objects_by_name():
    docs = [d for d in yaml.safe_load_all(RBAC.read_text()) if d]
    kinds = {d["kind"]: d for d in docs}
    assert sorted(kinds) == ["ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"]
    role = kinds["ClusterRole"]
    assert role["metadata"]["name"] == "netpol-scanner-read"
    granted = set()
    for rule in role["rules"]:
        assert set(rule) == {"apiGroups", "resources", "verbs"}, "no resourceNames/nonResourceURLs"
        assert set(rule["verbs"]) <= {"get", "list", "watch"}
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                granted.add((group, resource))
    assert granted == {("", "namespaces"), ("networking.k8s.io", "networkpolicies"),
                       ("cilium.io", "ciliumnetworkpolicies"), ("cilium.io", "ciliumclusterwidenetworkpolicies"),
                       ("projectcalico.org", "networkpolicies"), ("projectcalico.org", "globalnetworkpolicies"),
                       ("crd.projectcalico.org", "networkpolicies"), ("crd.projectcalico.org", "globalnetworkpolicies"),
                       ("policy.networking.k8s.io", "adminnetworkpolicies"),
                       ("policy.networking.k8s.io", "baselineadminnetworkpolicies")}
    binding = kinds["ClusterRoleBinding"]
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "netpol-scanner-read"}
    assert binding["subjects"] == [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "netpol-scanner:readers"}]
    enforcement = kinds["Role"]  # CIS 5.3.1: get of named objects in kube-system, never list
    assert enforcement["metadata"]["namespace"] == "kube-system"
    assert [(r["apiGroups"], r["resources"], sorted(r["resourceNames"]), r["verbs"]) for r in enforcement["rules"]] == [
        (["apps"], ["daemonsets"], ["aws-node", "calico-node", "cilium"], ["get"]),
        ([""], ["configmaps"], ["amazon-vpc-cni"], ["get"])]
    assert kinds["RoleBinding"]["subjects"] == binding["subjects"]


def test_aws_auth_snippet_maps_role_to_reader_group():
    config_map = yaml.safe_load(AWS_AUTH.read_text())
    assert config_map["metadata"] == {"name": "aws-auth", "namespace": "kube-system"}
    (entry,) = yaml.safe_load(config_map["data"]["mapRoles"])
    assert re.fullmatch(r"arn:aws:iam::[0-9]{12}:role/[A-Za-z0-9+=,.@_-]+", entry["rolearn"])
    assert entry["username"] == "netpol-scanner"
    assert entry["groups"] == ["netpol-scanner:readers"]


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
