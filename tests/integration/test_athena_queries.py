"""The five queries of docs/athena.md, run unchanged in DuckDB over findings files the real handler wrote, through
a view built from the Glue table in template.yaml (its columns, partition keys and location template): the
queries, the table and the S3 layout must agree."""
from __future__ import annotations

import datetime as dt
import re
from pathlib import Path
from typing import Any

import duckdb
import pytest

from netpol_scan.sandbox.aws_world import DEFAULT_ACCOUNT, DEFAULT_REGION, World
from netpol_scan.sandbox.kube_api import Cluster
from tests.integration.conftest import BUCKET, s3_json
from tests.integration.test_templates import TEMPLATE, load_cfn

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "athena.md"
MEMBER = "210987654321"
DENY_ALL = {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
HIVE_SCALARS = {"string": "VARCHAR", "bigint": "BIGINT", "int": "INTEGER", "double": "DOUBLE",
                "boolean": "BOOLEAN"}


def queries() -> dict[str, str]:
    """Each `## N. Title` section's SQL block, by title."""
    sections = re.findall(r"^## \d\. (.+?)\n.*?```sql\n(.*?)```", DOC.read_text(), re.M | re.S)
    return dict(sections)


def glue_table() -> dict[str, Any]:
    tables = [r for r in load_cfn(TEMPLATE)["Resources"].values() if r["Type"] == "AWS::Glue::Table"]
    assert len(tables) == 1
    return tables[0]["Properties"]["TableInput"]


def duck_type(hive: str, casing: dict[str, str]) -> str:
    parsed, rest = _parse(hive.replace(" ", ""), casing)
    assert rest == "", f"unparsed {rest!r} in {hive!r}"
    return parsed


def _parse(text: str, casing: dict[str, str]) -> tuple[str, str]:
    """One Hive type from the front of `text`; struct fields take the JSON key's case (the SerDe ignores case,
    DuckDB's JSON reader does not)."""
    for name, duck in HIVE_SCALARS.items():
        if re.match(rf"{name}\b", text):
            return duck, text[len(name):]
    if text.startswith("array<"):
        inner, rest = _parse(text[len("array<"):], casing)
        return f"{inner}[]", _expect(rest, ">")
    if text.startswith("map<"):
        key, rest = _parse(text[len("map<"):], casing)
        value, rest = _parse(_expect(rest, ","), casing)
        return f"MAP({key}, {value})", _expect(rest, ">")
    assert text.startswith("struct<"), text
    fields, rest = [], text[len("struct<"):]
    while True:
        name, rest = rest.split(":", 1)
        field_type, rest = _parse(rest, casing)
        fields.append(f'"{casing[name]}" {field_type}')
        if rest.startswith(">"):
            return f"STRUCT({', '.join(fields)})", rest[1:]
        rest = _expect(rest, ",")


def _expect(text: str, token: str) -> str:
    assert text.startswith(token), f"expected {token!r} at {text!r}"
    return text[len(token):]


def key_casing(findings: list[dict[str, Any]]) -> dict[str, str]:
    casing: dict[str, str] = {}

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                casing.setdefault(key.lower(), key)
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)

    walk(findings)
    return casing


@pytest.fixture
def findings_dir(world: World, invoke, monkeypatch, tmp_path: Path) -> Path:
    """Three runs of the real handler over two accounts, copied from the moto bucket as S3 holds them."""
    monkeypatch.setenv("TARGET_ACCOUNTS", f"{DEFAULT_ACCOUNT},{MEMBER}")
    for account in (DEFAULT_ACCOUNT, MEMBER):
        world.enable_security_hub(account, DEFAULT_REGION)
    until_soon = (dt.date.today() + dt.timedelta(days=10)).isoformat()
    until_later = (dt.date.today() + dt.timedelta(days=90)).isoformat()
    payments = Cluster("payments", {"default": {}, "ledger": {"deny": DENY_ALL}, "batch": {}})
    payments.add_namespace("legacy", annotations={"netpol-scanner.io/exempt": "vendor appliance, INC-42",
                                                  "netpol-scanner.io/exempt-until": until_soon})
    payments.add_namespace("lab", annotations={"netpol-scanner.io/exempt": "sandbox team",
                                               "netpol-scanner.io/exempt-until": until_later})
    world.add_cluster(DEFAULT_ACCOUNT, DEFAULT_REGION, payments)
    shop = Cluster("shop", {"default": {"deny": DENY_ALL}, "cart": {}})
    world.add_cluster(MEMBER, DEFAULT_REGION, shop)
    world.add_cluster(MEMBER, DEFAULT_REGION, Cluster("analytics", {"default": {}}), reachable=False)
    recovered = Cluster("recovered", {"default": {}})
    world.add_cluster(MEMBER, DEFAULT_REGION, recovered, reachable=False)

    assert invoke({})["clusters_failed"] == 2
    payments.add_policy("batch", "deny", DENY_ALL)  # fixed ...
    world.make_reachable(MEMBER, DEFAULT_REGION, "recovered")
    assert invoke({})["clusters_failed"] == 1
    payments.delete_policy("batch", "deny")  # ... and broken again
    assert invoke({})["clusters_failed"] == 1

    s3 = world.client("s3")
    for key in world.s3_keys(BUCKET):
        if key.startswith("findings/"):
            (tmp_path / key).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / key).write_bytes(s3.get_object(Bucket=BUCKET, Key=key)["Body"].read())
            assert _under_location_template(key), key
    return tmp_path


def _under_location_template(key: str) -> bool:
    template = glue_table()["Parameters"]["storage.location.template"]["Fn::Sub"]
    pattern = re.escape(template.replace("${ReportBucket}", BUCKET))
    for name in ("date", "account", "region"):
        pattern = pattern.replace(re.escape("${!" + name + "}"), "[^/]+")
    return re.match(pattern, f"s3://{BUCKET}/{key}") is not None


@pytest.fixture
def athena(findings_dir: Path, world: World) -> duckdb.DuckDBPyConnection:
    """DuckDB with a view named like the Glue table, declared from the template's columns."""
    table = glue_table()
    files = sorted(findings_dir.glob("findings/**/*.jsonl.gz"))
    sample = [f for path in files for f in s3_json(world, path.relative_to(findings_dir).as_posix())]
    casing = key_casing(sample)
    columns = {casing[c["Name"]]: duck_type(c["Type"], casing) for c in table["StorageDescriptor"]["Columns"]}
    partitions = [p["Name"] for p in table["PartitionKeys"]]
    assert partitions == ["date", "account", "region"]
    assert all(p["Type"] == "string" for p in table["PartitionKeys"])
    database = load_cfn(TEMPLATE)["Parameters"]["AthenaDatabase"]["Default"]
    connection = duckdb.connect()
    connection.execute("SET TimeZone = 'UTC'")  # Athena's current_date is UTC
    connection.execute(f"CREATE SCHEMA {database}")
    files_glob = f"{findings_dir}/findings/**/*.jsonl.gz".replace("'", "''")
    connection.execute(
        f"CREATE VIEW {database}.{table['Name']} AS SELECT * EXCLUDE (cluster) FROM read_json('{files_glob}', "
        f"format='newline_delimited', hive_partitioning=true, columns={columns!r}, "
        f"hive_types={ {p: 'VARCHAR' for p in partitions}!r})")
    return connection


def run(athena: duckdb.DuckDBPyConnection, title: str) -> list[dict[str, Any]]:
    cursor = athena.execute(queries()[title])
    names = [d[0].lower() for d in cursor.description]  # Athena names result columns in lower case
    return [dict(zip(names, row)) for row in cursor.fetchall()]


def test_the_doc_has_five_queries_over_the_table():
    assert list(queries()) == ["Failing namespaces now", "Trend per account", "Namespaces failing longest",
                               "Clusters not assessed", "Exemptions expiring"]
    database = load_cfn(TEMPLATE)["Parameters"]["AthenaDatabase"]["Default"]
    for sql in queries().values():
        assert f"FROM {database}.{glue_table()['Name']}\n" in sql


NETPOL = "eks-netpol-scanner/cis-k8s-5.3.2"
FAILING = {(DEFAULT_ACCOUNT, "payments", "batch"), (DEFAULT_ACCOUNT, "payments", "default"),
           (MEMBER, "recovered", "default"), (MEMBER, "shop", "cart")}


def test_failing_namespaces_now(athena):
    rows = run(athena, "Failing namespaces now")
    assert {(r["account"], r["cluster"], r["namespace"]) for r in rows if r["generatorid"] == NETPOL} == FAILING
    assert {(r["account"], r["cluster"], r["namespace"]) for r in rows} == FAILING  # exempt ones are WARNING
    assert rows == sorted(rows, key=lambda r: (r["account"], r["region"], r["cluster"], r["namespace"]))
    assert {r["severity"] for r in rows if r["generatorid"] == NETPOL} == {"MEDIUM"}


def test_trend_per_account(athena):
    today = dt.datetime.now(dt.timezone.utc).date().isoformat()
    rows = run(athena, "Trend per account")
    # payments: default and batch fail, ledger passes, legacy and lab are exempt; shop: cart fails, default
    # passes; recovered: default fails (first read in the second run); analytics: never read.
    assert [(r["date"], r["account"], r["failing"], r["namespaces"]) for r in rows] == [
        (today, DEFAULT_ACCOUNT, 2, 5), (today, MEMBER, 2, 3)]


def test_namespaces_failing_longest_start_after_the_last_fix(athena):
    rows = [r for r in run(athena, "Namespaces failing longest") if r["generatorid"] == NETPOL]
    by_namespace = {(r["account"], r["cluster"], r["namespace"]): r for r in rows}
    assert set(by_namespace) == FAILING
    assert {r["days_failing"] for r in rows} == {0}
    first_run = by_namespace[(DEFAULT_ACCOUNT, "payments", "default")]["failing_since"]
    assert by_namespace[(MEMBER, "shop", "cart")]["failing_since"] == first_run
    second_run = by_namespace[(MEMBER, "recovered", "default")]["failing_since"]  # first read in the second run
    third_run = by_namespace[(DEFAULT_ACCOUNT, "payments", "batch")]["failing_since"]  # failing again since
    assert first_run < second_run < third_run
    assert [r["failing_since"] for r in rows] == sorted(r["failing_since"] for r in rows)


def test_clusters_not_assessed(athena):
    rows = run(athena, "Clusters not assessed")
    assert [(r["account"], r["cluster"]) for r in rows] == [(MEMBER, "analytics")]
    assert "cannot reach" in rows[0]["reason"]


def test_exemptions_expiring(athena):
    rows = run(athena, "Exemptions expiring")
    assert {(r["cluster"], r["namespace"]) for r in rows} == {("payments", "legacy")}  # not lab: in 90 days
    assert NETPOL in {r["generatorid"] for r in rows}
    assert {r["reason"] for r in rows} == {"vendor appliance, INC-42"}
    soon = dt.date.today() + dt.timedelta(days=10)  # the annotation's date: valid through it, or until it
    assert all(0 <= (dt.date.fromisoformat(r["exempt_until"][:10]) - soon).days <= 1 for r in rows)
