"""Settings.from_env and ScanRequest.from_event: validation, defaults, and error messages that name the field."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from handler.config import DEFAULT_CLUSTER_CONCURRENCY, ScanRequest, Settings, require_targeted
from handler.errors import ConfigError, EventError

EVENTS = Path(__file__).resolve().parents[2] / "events"
A1, A2 = "123456789012", "210987654321"


def env(**extra: str) -> dict[str, str]:
    return {"REPORT_BUCKET": "netpol-reports", **extra}


# -- Settings.from_env ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("bucket", [None, "", "   ", "UPPER-case", "a", "-leading-dash", "trailing-dash-",
                                    "under_score", "x" * 64, "s3://bucket"])
def test_report_bucket_missing_or_invalid(bucket):
    e = {} if bucket is None else {"REPORT_BUCKET": bucket}
    with pytest.raises(ConfigError, match="REPORT_BUCKET"):
        Settings.from_env(e)


def test_report_bucket_is_stripped():
    assert Settings.from_env({"REPORT_BUCKET": "  my-bucket.reports "}).report_bucket == "my-bucket.reports"


def test_defaults():
    s = Settings.from_env(env(AWS_REGION="eu-central-1"))
    assert s.default_region == "eu-central-1"
    assert s.target_accounts == () and s.target_regions == ()
    assert s.use_organization is False
    assert s.scan_role_name is None and s.scan_role_external_id is None
    assert s.cluster_concurrency == DEFAULT_CLUSTER_CONCURRENCY


def test_region_falls_back_to_aws_default_region_then_us_east_1():
    assert Settings.from_env(env(AWS_DEFAULT_REGION="ap-south-1")).default_region == "ap-south-1"
    assert Settings.from_env(env(AWS_REGION="eu-west-3", AWS_DEFAULT_REGION="ap-south-1")).default_region == "eu-west-3"
    assert Settings.from_env(env()).default_region == "us-east-1"


def test_target_accounts_comma_list_with_spaces_and_duplicates():
    s = Settings.from_env(env(TARGET_ACCOUNTS=f" {A1} ,{A2},, {A1} ,"))
    assert s.target_accounts == (A1, A2)
    assert s.use_organization is False


def test_target_accounts_organization_alone():
    s = Settings.from_env(env(TARGET_ACCOUNTS=" ORGANIZATION "))
    assert s.use_organization is True
    assert s.target_accounts == ()


@pytest.mark.parametrize("value", [f"ORGANIZATION,{A1}", f"{A1}, ORGANIZATION"])
def test_target_accounts_organization_mixed_with_ids_is_an_error(value):
    with pytest.raises(ConfigError, match="TARGET_ACCOUNTS"):
        Settings.from_env(env(TARGET_ACCOUNTS=value))


@pytest.mark.parametrize("bad", ["12345678901", "1234567890123", "12345678901a", "organization", "acct-1"])
def test_target_accounts_bad_ids(bad):
    with pytest.raises(ConfigError, match="TARGET_ACCOUNTS") as info:
        Settings.from_env(env(TARGET_ACCOUNTS=f"{A1},{bad}"))
    assert repr(bad) in str(info.value)  # the offending value is quoted
    assert repr(A1) not in str(info.value)


def test_target_regions_valid_and_deduplicated():
    s = Settings.from_env(env(TARGET_REGIONS="eu-west-1, us-gov-west-1 ,eu-west-1,cn-north-1"))
    assert s.target_regions == ("eu-west-1", "us-gov-west-1", "cn-north-1")


@pytest.mark.parametrize("bad", ["EU-WEST-1", "euwest1", "eu-west", "eu-west-100", "mars"])
def test_target_regions_invalid(bad):
    with pytest.raises(ConfigError, match="TARGET_REGIONS") as info:
        Settings.from_env(env(TARGET_REGIONS=f"eu-west-1,{bad}"))
    assert repr(bad) in str(info.value)


@pytest.mark.parametrize("role", ["NetpolScanRole", "path_role+=,.@-x", "r" * 64])
def test_scan_role_name_valid(role):
    assert Settings.from_env(env(SCAN_ROLE_NAME=f" {role} ")).scan_role_name == role


@pytest.mark.parametrize("role", ["r" * 65, "arn:aws:iam::123456789012:role/x", "with space", "a/b"])
def test_scan_role_name_invalid(role):
    with pytest.raises(ConfigError, match="SCAN_ROLE_NAME"):
        Settings.from_env(env(SCAN_ROLE_NAME=role))


def test_blank_role_and_external_id_are_none():
    s = Settings.from_env(env(SCAN_ROLE_NAME="  ", SCAN_ROLE_EXTERNAL_ID=" "))
    assert s.scan_role_name is None and s.scan_role_external_id is None
    assert Settings.from_env(env(SCAN_ROLE_EXTERNAL_ID=" ext-1 ")).scan_role_external_id == "ext-1"


@pytest.mark.parametrize("value, expected", [("1", 1), ("64", 64), (" 12 ", 12), ("", DEFAULT_CLUSTER_CONCURRENCY)])
def test_cluster_concurrency_bounds_ok(value, expected):
    assert Settings.from_env(env(CLUSTER_CONCURRENCY=value)).cluster_concurrency == expected


@pytest.mark.parametrize("value", ["0", "65", "-1", "2.5", "eight", "1e3"])
def test_cluster_concurrency_out_of_bounds(value):
    with pytest.raises(ConfigError, match="CLUSTER_CONCURRENCY"):
        Settings.from_env(env(CLUSTER_CONCURRENCY=value))


def test_cluster_concurrency_unicode_digit_is_a_config_error():
    with pytest.raises(ConfigError, match="CLUSTER_CONCURRENCY"):
        Settings.from_env(env(CLUSTER_CONCURRENCY="²"))


def test_page_size_capped_at_500():
    assert Settings.from_env(env(K8S_PAGE_SIZE="100")).page_size == 100
    with pytest.raises(ConfigError, match="K8S_PAGE_SIZE"):
        Settings.from_env(env(K8S_PAGE_SIZE="501"))


# -- ScanRequest.from_event -----------------------------------------------------------------------------------

@pytest.mark.parametrize("event", [None, {}])
def test_empty_event_is_a_full_scan(event):
    r = ScanRequest.from_event(event)
    assert r == ScanRequest()
    assert (r.accounts, r.regions, r.clusters, r.dry_run, r.names_clusters) == ((), (), (), False, False)


@pytest.mark.parametrize("event", [[], "scan", 42])
def test_non_object_event(event):
    with pytest.raises(EventError, match="JSON object"):
        ScanRequest.from_event(event)


EXPECTED_EVENTS = {
    "dry-run.json": ScanRequest(dry_run=True),
    "one-account.json": ScanRequest(accounts=(A1,)),
    "one-cluster.json": ScanRequest(accounts=(A1,), regions=("eu-west-1",), clusters=("alpha",)),
    "scheduled.json": ScanRequest(),
}


DOCTOR_EVENTS = ("doctor.json",)  # not a scan: handler.doctor.doctor_request parses it (tests/unit/test_doctor.py)


def test_every_sample_event_is_covered():
    assert sorted(p.name for p in EVENTS.glob("*.json")) == sorted([*EXPECTED_EVENTS, *DOCTOR_EVENTS])


@pytest.mark.parametrize("name", sorted(EXPECTED_EVENTS))
def test_sample_events_parse(name):
    event = json.loads((EVENTS / name).read_text())
    assert ScanRequest.from_event(event) == EXPECTED_EVENTS[name]


def test_one_cluster_event_names_clusters():
    assert ScanRequest.from_event(json.loads((EVENTS / "one-cluster.json").read_text())).names_clusters is True


def test_eventbridge_scheduled_event_is_a_full_scan():
    event = {"version": "0", "id": "53dc4d37-cffa-4f76-80c9-8b7d4a4d2eaa", "detail-type": "Scheduled Event",
             "source": "aws.events", "account": A1, "time": "2025-01-01T00:00:00Z", "region": "eu-west-1",
             "resources": [f"arn:aws:events:eu-west-1:{A1}:rule/netpol"], "detail": {}}
    assert ScanRequest.from_event(event) == ScanRequest()


@pytest.mark.parametrize("field, value", [
    ("accounts", A1), ("accounts", []), ("accounts", ["12345"]), ("accounts", [123456789012]),
    ("accounts", [A1, "1234567890123"]),
    ("regions", "eu-west-1"), ("regions", []), ("regions", ["EU-WEST-1"]), ("regions", ["eu-west"]),
    ("clusters", "alpha"), ("clusters", []), ("clusters", ["-alpha"]), ("clusters", ["has space"]),
    ("clusters", ["x" * 101]), ("clusters", ["a.b"]), ("clusters", [None]),
    ("dry_run", "sometimes"), ("dry_run", "true"), ("dry_run", 1), ("dry_run", None),
    ("source", 7),
])
def test_bad_field_is_named(field, value):
    with pytest.raises(EventError) as info:
        ScanRequest.from_event({field: value})
    assert f"'{field}'" in str(info.value)


@pytest.mark.parametrize("cluster", ["a", "A1", "0-cluster_x", "x" * 100])
def test_valid_cluster_names(cluster):
    assert ScanRequest.from_event({"clusters": [cluster]}).clusters == (cluster,)


def test_unknown_keys_are_named():
    with pytest.raises(EventError) as info:
        ScanRequest.from_event({"acounts": [A1], "cluster": ["alpha"], "dry_run": True})
    message = str(info.value)
    assert "acounts" in message and "cluster" in message
    assert "allowed" in message


def test_several_problems_reported_together():
    with pytest.raises(EventError) as info:
        ScanRequest.from_event({"accounts": "123", "regions": ["nowhere"], "clusters": [], "dry_run": "sometimes"})
    message = str(info.value)
    for field in ("accounts", "regions", "clusters", "dry_run"):
        assert f"'{field}'" in message


def test_unknown_keys_reported_with_other_problems():
    with pytest.raises(EventError) as info:
        ScanRequest.from_event({"acounts": [A1], "regions": ["nowhere"]})
    assert "acounts" in str(info.value) and "'regions'" in str(info.value)


def test_full_manual_event():
    r = ScanRequest.from_event({"accounts": [A1, A2], "regions": ["eu-west-1"], "clusters": ["alpha", "beta"],
                                "dry_run": True, "source": "manual"})
    assert r == ScanRequest((A1, A2), ("eu-west-1",), ("alpha", "beta"), True)


@pytest.mark.parametrize("field, value", [("accounts", A1 + "\n"), ("regions", "eu-west-1\n"),
                                          ("clusters", "alpha\n")])
def test_trailing_newline_is_rejected(field, value):
    with pytest.raises(EventError, match=field):
        ScanRequest.from_event({field: [value]})


def test_non_ascii_digits_are_not_an_account_id():
    with pytest.raises(EventError, match="accounts"):
        ScanRequest.from_event({"accounts": ["١٢٣٤٥٦٧٨٩٠١٢"]})


def test_event_lists_are_deduplicated():
    r = ScanRequest.from_event({"accounts": [A1, A1], "regions": ["eu-west-1", "eu-west-1"]})
    assert r.accounts == (A1,) and r.regions == ("eu-west-1",)


# -- the scanner's targets ------------------------------------------------------------------------------------

@pytest.mark.parametrize("settings, where", [
    (env(TARGET_ACCOUNTS=f"{A1},{A2}"), "TARGET_ACCOUNTS"),
    (env(TARGET_ACCOUNTS="ORGANIZATION"), "the organization's ACTIVE accounts"),
    (env(), "the function's own account, as TARGET_ACCOUNTS is empty"),
])
def test_an_account_outside_the_targets_is_named_with_where_the_targets_come_from(settings, where):
    targeted = (A1, A2)
    require_targeted([A2, A1], targeted, Settings.from_env(settings))  # targets pass, in any order
    with pytest.raises(EventError) as raised:
        require_targeted([A1, "999999999999", "888888888888"], targeted, Settings.from_env(settings))
    assert str(raised.value) == (f"account(s) 999999999999, 888888888888 are not targets of this scanner "
                                 f"(targets: {where}); nothing was scanned")


def test_the_sample_events_name_the_sandboxs_account_a_real_scanner_must_target():
    """events/one-account.json's placeholder is the sandbox's own account: elsewhere it is refused, not scanned."""
    request = ScanRequest.from_event(json.loads((EVENTS / "one-account.json").read_text()))
    with pytest.raises(EventError, match="not targets"):
        require_targeted(request.accounts, [A2], Settings.from_env(env(TARGET_ACCOUNTS=A2)))
