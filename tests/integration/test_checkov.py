"""checkov over the deployment templates and the Kubernetes manifests: no failed check, and every skipped check is
skipped inline, beside the resource, with its reason, so that a new finding fails the suite.

`checkov` must be on PATH (`make test` installs it in .venv-checkov, whose pins the project's venv cannot hold, and
puts .venv-checkov/bin on PATH). Without it these tests fail, unless NETPOL_SKIP_CHECKOV=1 is set.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# template.yaml and everything kubectl or CloudFormation would read under infra/ (infra/kubernetes/ included).
SCANNED = [ROOT / "template.yaml", *sorted(p for p in (ROOT / "infra").rglob("*") if p.suffix in (".yaml", ".yml",
                                                                                                    ".json"))]
MIN_REASON = 60  # characters: a reason, not a shrug


def checkov_executable() -> str:
    found = shutil.which("checkov") or (str(ROOT / ".venv-checkov" / "bin" / "checkov")
                                        if (ROOT / ".venv-checkov" / "bin" / "checkov").exists() else None)
    if found:
        return found
    if os.environ.get("NETPOL_SKIP_CHECKOV") == "1":
        pytest.skip("checkov not on PATH and NETPOL_SKIP_CHECKOV=1")
    pytest.fail("checkov is not on PATH: run `make test` (it installs .venv-checkov and puts it on PATH), or "
                "`make .venv-checkov/.installed`; set NETPOL_SKIP_CHECKOV=1 to skip.")


def checkov(files: list[Path]) -> list[dict]:
    """One checkov run (every outcome, no platform download, nothing skipped from the command line): its reports
    per framework."""
    done = subprocess.run(
        [checkov_executable(), "--framework", "cloudformation", "kubernetes", "--skip-download",
         "--compact", "--output", "json", *[arg for path in files for arg in ("--file", str(path))]],
        cwd=ROOT, capture_output=True, text=True, timeout=900, env={**os.environ, "BC_SKIP_MAPPING": "TRUE"})
    assert done.returncode in (0, 1), f"checkov failed to run:\n{done.stderr[-3000:]}"
    reports = json.loads(done.stdout)
    return reports if isinstance(reports, list) else [reports]


@pytest.fixture(scope="module")
def without_one_skip(tmp_path_factory) -> Path:
    """template.yaml less the report bucket's inline skip of CKV_AWS_18: what a new finding looks like."""
    text = (ROOT / "template.yaml").read_text()
    start = text.index("          - id: CKV_AWS_18\n")
    end = text.index("    Properties:\n", start)
    trimmed = text[:start] + "          - id: CKV_AWS_0\n            comment: none\n" + text[end:]
    path = tmp_path_factory.mktemp("checkov") / "template.yaml"
    path.write_text(trimmed)
    return path


@pytest.fixture(scope="module")
def reports(without_one_skip) -> dict[str, dict]:
    """Both runs in one checkov invocation (it is slow to start): the project's files, and the trimmed copy."""
    return {report["check_type"]: report for report in checkov([*SCANNED, without_one_skip])}


def results_of(reports: dict[str, dict], outcome: str, in_project: bool) -> list[dict]:
    return [check for report in reports.values() for check in report["results"][outcome]
            if (Path(check["file_abs_path"]).resolve().is_relative_to(ROOT)) == in_project]


def test_no_check_fails_on_the_templates_and_manifests(reports):
    assert set(reports) == {"cloudformation", "kubernetes"}
    assert all(r["summary"]["parsing_errors"] == 0 for r in reports.values())
    failed = [(c["check_id"], c["resource"], c["file_path"]) for c in results_of(reports, "failed_checks", True)]
    assert failed == [], "new checkov findings: fix them, or skip them inline with the reason"
    scanned = {Path(c["file_abs_path"]).resolve() for c in results_of(reports, "passed_checks", True)}
    # eks-access-entry.yaml holds only an AWS::EKS::AccessEntry, which no checkov check covers.
    assert scanned >= {(ROOT / name).resolve() for name in ("template.yaml", "infra/member-role.yaml",
                                                            "infra/kubernetes/rbac.yaml")}


def test_every_skipped_check_is_skipped_inline_with_its_reason(reports):
    skipped = results_of(reports, "skipped_checks", True)
    assert skipped, "the template's inline skips are seen"
    for check in skipped:
        reason = check["check_result"].get("suppress_comment") or ""
        assert len(reason) >= MIN_REASON, (check["check_id"], check["resource"], reason)
    template = (ROOT / "template.yaml").read_text()
    assert {c["check_id"] for c in skipped} <= {line.split("id: ")[1] for line in template.splitlines()
                                                if line.strip().startswith("- id: CKV")}


def test_a_check_no_longer_skipped_fails(reports):
    """The control: the same run over a copy of template.yaml without one inline skip reports that finding."""
    failed = {(c["check_id"], c["resource"]) for c in results_of(reports, "failed_checks", False)}
    assert failed == {("CKV_AWS_18", "AWS::S3::Bucket.ReportBucket")}
