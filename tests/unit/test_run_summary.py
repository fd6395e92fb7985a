"""Run summaries over cluster results, and the EMF metrics made of them."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from handler.observability import record_metrics
from handler.run.report import summarize

ROOT = Path(__file__).resolve().parents[2]


def cluster(account: str, name: str, result: str = "scanned", failing: int = 0, namespaces: int = 3,
            rejected: int = 0) -> dict:
    return {"account_id": account, "region": "eu-west-1", "cluster": name, "result": result,
            "error": None if result != "failed" else "boom", "namespaces": namespaces,
            "namespaces_failing": failing, "namespaces_terminating": 0, "findings": namespaces,
            "findings_imported": namespaces - rejected, "findings_archived": 0,
            "findings_rejected": [{"finding_id": f"x{i}"} for i in range(rejected)]}


def test_summary_counts_only_scanned_clusters_namespaces_and_breaks_failures_down_by_account():
    clusters = [cluster("111111111111", "a", failing=2), cluster("111111111111", "b", failing=1, rejected=1),
                cluster("222222222222", "c", failing=5), cluster("222222222222", "d", result="failed", failing=9),
                cluster("333333333333", "e", result="deleted", namespaces=0)]
    summary = summarize(clusters, [{"account_id": "444444444444", "region": "*", "error": "no role"}])
    assert (summary["clusters_scanned"], summary["clusters_failed"], summary["clusters_deleted"]) == (3, 1, 1)
    assert (summary["namespaces"], summary["namespaces_failing"]) == (9, 8)
    assert summary["namespaces_failing_by_account"] == {"111111111111": 3, "222222222222": 5}
    assert (summary["findings_rejected"], summary["accounts_failed"]) == (1, 1)
    assert summary["failures"] == [{"cluster": "222222222222/eu-west-1/d", "error": "boom"},
                                   {"target": "444444444444/*", "error": "no role"}]


def test_rejections_are_told_per_account_and_region_and_security_hub_off_in_words():
    off = {"finding_id": "a", "error_code": "InvalidAccessException",
           "error_message": "Account 111111111111 is not subscribed to AWS Security Hub"}
    large = {"finding_id": "b", "error_code": "TooLarge", "error_message": "over 245760 bytes"}
    clusters = [cluster("111111111111", "a"), cluster("111111111111", "b"), cluster("222222222222", "c")]
    clusters[0]["findings_rejected"] = [off, {**off, "finding_id": "c"}]
    clusters[1]["findings_rejected"] = [large]
    clusters[2]["region"] = "us-east-1"
    clusters[2]["findings_rejected"] = [{**off, "error_message": "Security Hub is not enabled"}]
    by_target = summarize(clusters, [])["findings_rejected_by_target"]
    assert [(t["target"], t["findings_rejected"]) for t in by_target] == [("111111111111/eu-west-1", 3),
                                                                          ("222222222222/us-east-1", 1)]
    assert by_target[0]["why"][0].startswith("Security Hub CSPM is not enabled here: enable it")
    assert by_target[0]["why"][1] == "TooLarge: over 245760 bytes"
    assert by_target[1]["why"][0].startswith("Security Hub CSPM is not enabled here")


def test_failing_namespaces_are_emitted_per_account_for_the_dashboard(capsys):
    record_metrics({"namespaces_failing_by_account": {"111111111111": 3, "222222222222": 5}})
    blobs = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    per_account = {b["account"]: b["NamespacesFailing"] for b in blobs if "account" in b}
    assert per_account == {"111111111111": [3.0], "222222222222": [5.0]}
    assert all(b["_aws"]["CloudWatchMetrics"][0]["Dimensions"] == [["service", "account"]] for b in blobs)


def test_per_account_metrics_respect_powertools_metrics_disabled(capsys, monkeypatch):
    monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "true")
    record_metrics({"namespaces_failing_by_account": {"111111111111": 3}})
    assert capsys.readouterr().out == ""


@pytest.mark.parametrize("disabled", ["true", "false"])
def test_the_cold_start_metric_respects_powertools_metrics_disabled(disabled):
    """A fresh interpreter, as Lambda's, and an invocation that returns (Powertools adds ColdStart only then): the
    doctor, whose AWS endpoint refuses connections, reports that and returns."""
    script = ("from handler.app import lambda_handler\n"
              "from netpol_scan.lambda_context import LambdaContext\n"
              "report = lambda_handler({'doctor': True}, LambdaContext())\n"
              "assert report['ok'] is False, report\n")
    env = {**os.environ, "POWERTOOLS_METRICS_DISABLED": disabled, "POWERTOOLS_TRACE_DISABLED": "true",
           "POWERTOOLS_DEV": "false", "POWERTOOLS_LOG_LEVEL": "CRITICAL", "AWS_DEFAULT_REGION": "eu-west-1",
           "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_ENDPOINT_URL": "http://127.0.0.1:9",
           "AWS_MAX_ATTEMPTS": "1", "REPORT_BUCKET": "unused"}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120,
                          cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert ('"ColdStart"' in done.stdout) is (disabled == "false"), done.stdout
