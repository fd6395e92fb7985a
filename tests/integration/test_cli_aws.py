"""`netpol-scan invoke`, `sandbox` and `report` against the moto server and Kubernetes API test servers: the
real handler with the environment pointed at them, as a person's AWS credentials would point it at AWS."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from matplotlib import image

from netpol_scan.cli import main
from netpol_scan.sandbox.aws_world import DEFAULT_ACCOUNT, DEFAULT_REGION
from netpol_scan.sandbox.kube_api import Cluster
from tests.integration.conftest import BUCKET

ROOT = Path(__file__).resolve().parents[2]
SCHEDULED = ROOT / "events" / "scheduled.json"
MEMBER = "210987654321"


@pytest.fixture
def fleet(world, scanner_env, monkeypatch):
    """Two accounts, one unreadable cluster; the function scans both accounts."""
    monkeypatch.setenv("TARGET_ACCOUNTS", f"{DEFAULT_ACCOUNT},{MEMBER}")
    for account in (DEFAULT_ACCOUNT, MEMBER):
        world.enable_security_hub(account, DEFAULT_REGION)
    world.add_cluster(DEFAULT_ACCOUNT, DEFAULT_REGION, Cluster("alpha", {"default": {}, "web": {}}))
    shop = Cluster("shop", {"default": {}, "cart": {"deny": {"podSelector": {}}}})
    world.add_cluster(MEMBER, DEFAULT_REGION, shop)
    return world


def invoke(capsys, *args: str) -> tuple[int, dict | None, str]:
    code = main(["invoke", *args])
    out, err = capsys.readouterr()
    return code, json.loads(out) if out.strip() else None, err


def test_invoke_runs_the_handler_and_prints_its_summary(fleet, capsys):
    code, summary, _ = invoke(capsys, str(SCHEDULED))

    assert code == 0
    assert (summary["clusters_scanned"], summary["namespaces_failing"], summary["dry_run"]) == (2, 3, False)
    assert summary["report"] in fleet.s3_keys(BUCKET)
    imported = fleet.findings(DEFAULT_ACCOUNT, DEFAULT_REGION) + fleet.findings(MEMBER, DEFAULT_REGION)
    assert len(imported) == summary["findings_imported"] == summary["findings"]
    netpol = {(f["ProductFields"]["kubernetes/cluster"], f["ProductFields"]["kubernetes/namespace"]):
              f["Compliance"]["Status"] for f in imported if f["GeneratorId"] == "eks-netpol-scanner/cis-k8s-5.3.2"}
    assert netpol == {("alpha", "default"): "FAILED", ("alpha", "web"): "FAILED", ("shop", "default"): "FAILED",
                      ("shop", "cart"): "PASSED"}


def test_invoke_dry_run_writes_nothing(fleet, capsys):
    code, summary, _ = invoke(capsys, str(SCHEDULED), "--dry-run")

    assert code == 0
    assert summary["dry_run"] is True and summary["findings"] >= 4 and "report" not in summary
    assert fleet.s3_keys(BUCKET) == [] and fleet.findings(MEMBER, DEFAULT_REGION) == []


def test_invoke_exits_3_when_a_cluster_is_not_assessed(fleet, capsys):
    fleet.server(MEMBER, DEFAULT_REGION, "shop").cluster.inject("namespaces", 401, times=None)

    code, summary, _ = invoke(capsys, str(SCHEDULED))

    assert code == 3
    assert summary["clusters_failed"] == 1 and "HTTP 401" in summary["failures"][0]["error"]


@pytest.mark.parametrize(("content", "message"), [
    (None, "cannot read"), ("{not json", "is not JSON"), ("[]", "must hold a JSON object"),
    ('{"clusters": "alpha"}', "field 'clusters' must be a non-empty list"),
])
def test_invoke_bad_event(fleet, capsys, tmp_path, content, message):
    event = tmp_path / "event.json"
    if content is not None:
        event.write_text(content)

    code, summary, err = invoke(capsys, str(event))

    assert (code, summary) == (2, None)
    assert message in err


def test_invoke_bad_settings(fleet, capsys, monkeypatch):
    monkeypatch.setenv("REPORT_BUCKET", "Not_A_Bucket")

    code, _, err = invoke(capsys, str(SCHEDULED))

    assert code == 2 and "REPORT_BUCKET must name an S3 bucket" in err


def test_invoke_handler_failure(fleet, capsys, monkeypatch):
    monkeypatch.setenv("REPORT_BUCKET", "no-such-bucket-here")

    code, summary, err = invoke(capsys, str(SCHEDULED))

    assert (code, summary) == (4, None)
    assert "the handler failed" in err and "no-such-bucket-here" in err


def test_report_plots_the_dashboard_series_from_the_run_history(fleet, capsys, tmp_path):
    summaries = []
    for _ in range(3):
        summaries.append(invoke(capsys, str(SCHEDULED))[1])
    fleet.server(MEMBER, DEFAULT_REGION, "shop").cluster.add_namespace("orders")
    summaries.append(invoke(capsys, str(SCHEDULED))[1])
    png = tmp_path / "plots" / "history.png"

    code = main(["report", "--bucket", BUCKET, "--plot", str(png)])

    out, _ = capsys.readouterr()
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split()[:4] == ["started", "(UTC)", "run", "scanned"]
    assert [line.split()[2:7] for line in lines[1:5]] == [
        [s["run_id"], str(s["clusters_scanned"]), str(s["clusters_failed"]), str(s["namespaces_failing"]),
         str(s["findings_imported"])] for s in summaries]
    assert summaries[-1]["namespaces_failing"] == summaries[0]["namespaces_failing"] + 1
    assert lines[-1] == f"wrote {png}"
    pixels = image.imread(png)
    assert pixels.shape[:2] == (800, 1200)
    rgb = pixels[..., :3]
    assert rgb.std() > 0.05, "blank image"
    white = np.all(rgb > 0.98, axis=-1).mean()
    assert 0.5 < white < 0.99, f"{white:.2%} white: no panels, or no background"
    colours = {tuple(np.round(c, 1)) for c in rgb.reshape(-1, 3)[::7]}
    assert len(colours) > 10, "the series lines are missing"


def test_report_from_a_local_copy_and_without_reports(fleet, capsys, tmp_path):
    assert invoke(capsys, str(SCHEDULED))[0] == 0
    s3 = fleet.client("s3")
    for key in fleet.s3_keys(BUCKET):
        (tmp_path / key).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / key).write_bytes(s3.get_object(Bucket=BUCKET, Key=key)["Body"].read())

    assert main(["report", "--dir", str(tmp_path)]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 2

    assert main(["report", "--dir", str(tmp_path / "findings")]) == 2
    assert "holds no runs/ folder" in capsys.readouterr().err
    assert main(["report", "--bucket", BUCKET, "--days", "1"]) == 0
    capsys.readouterr()
    s3.create_bucket(Bucket="empty-reports", CreateBucketConfiguration={"LocationConstraint": DEFAULT_REGION})
    assert main(["report", "--bucket", "empty-reports"]) == 2
    assert "no run reports in s3://empty-reports/runs/ since" in capsys.readouterr().err


def test_sandbox_is_what_make_demo_runs():
    makefile = (ROOT / "Makefile").read_text()
    assert "\n\t$(BIN)/netpol-scan sandbox\n" in makefile.split("\ndemo:", 1)[1].split("\n\n", 1)[0] + "\n"
    script = Path(sys.executable).parent / "netpol-scan"

    done = subprocess.run([str(script), "sandbox"], capture_output=True, text=True, timeout=180, cwd=ROOT)

    assert done.returncode == 0, done.stderr
    assert "scanned 3 cluster(s), 1 could not be read" in done.stdout
    assert "NOT_AVAILABLE legacy-analytics/-" in done.stdout
    (auto_mode,) = [line for line in done.stdout.splitlines() if "orders-auto/- " in line]
    assert auto_mode.split()[0] == "PASSED" and "enforces network policies" in auto_mode, "EKS Auto Mode, 5.3.1"
    # Namespaces guarded only by the kinds of 2025 (EKS's ApplicationNetworkPolicy and ClusterNetworkPolicy, the
    # upstream v1alpha2 ClusterNetworkPolicy) pass 5.3.2 and the isolation their policies give.
    shown = {tuple(line.split()[:2]) + (" ".join(line.split()[2:]),) for line in done.stdout.splitlines()}
    for namespace, verdicts in {"orders-auto/orders": ("has network policies defined", "denies egress by default"),
                                "orders-auto/reports": ("has network policies defined", "denies egress by default"),
                                "payments-prod/batch": ("has network policies defined", "denies ingress by default")
                                }.items():
        for verdict in verdicts:
            assert any(line[:2] == ("PASSED", namespace) and line[2].endswith(verdict) for line in shown), \
                (namespace, verdict)
    assert "S3 bucket netpol-scanner-sandbox:" in done.stdout and "(run report)" in done.stdout
