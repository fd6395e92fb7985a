"""`netpol-scan`: the scanner from a laptop or a CI job, with the Lambda's own reader, controls and ASFF code.

    netpol-scan cluster [--context NAME ...] [--all-contexts] [--output table|json|asff] [--fail-on SEVERITY]
    netpol-scan invoke EVENT.json [--dry-run]
    netpol-scan doctor [--account ID ...] [--region NAME ...] [--cluster NAME ...] [--output table|json]
    netpol-scan sandbox
    netpol-scan report (--bucket NAME | --dir PATH) [--days N] [--plot FILE.png]

Exit codes: 0 fine; 1 a namespace fails a control at or above --fail-on; 2 bad input (arguments, kubeconfig,
event, settings); 3 something could not be assessed (a context or cluster unreadable, an account not entered;
for `doctor`: any gap); 4 the Lambda handler itself failed (`invoke`).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any, TextIO

EXIT_OK, EXIT_FAILING, EXIT_USAGE, EXIT_NOT_ASSESSED, EXIT_ERROR = 0, 1, 2, 3, 4


class UsageError(Exception):
    """Raised for input a person must fix: the message says what and how; the exit code is 2."""


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return args.run(args)
    except UsageError as error:
        print(f"netpol-scan {args.command}: {error}", file=sys.stderr)
        return EXIT_USAGE


def _parser() -> argparse.ArgumentParser:
    from netpol_scan.local_scan import NEVER, SEVERITIES

    parser = argparse.ArgumentParser(prog="netpol-scan", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 2)[2])
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    cluster = commands.add_parser("cluster", help="scan kubeconfig contexts; writes nothing to AWS")
    cluster.add_argument("--kubeconfig", help="kubeconfig path (default: KUBECONFIG, else ~/.kube/config)")
    cluster.add_argument("--context", action="append", default=[], metavar="NAME",
                         help="context to scan (repeatable; default: the current context)")
    cluster.add_argument("--all-contexts", action="store_true", help="scan every context of the kubeconfig")
    cluster.add_argument("--output", "-o", choices=("table", "json", "asff"), default="table")
    cluster.add_argument("--fail-on", type=str.upper, choices=(*SEVERITIES[1:], NEVER), default="LOW",
                         help="exit 1 when a namespace fails a control of this severity or higher (default LOW: "
                              "any failure; NONE: never)")
    cluster.add_argument("--account-id", help="account for ASFF of contexts not named by an EKS ARN")
    cluster.add_argument("--region", help="Region for ASFF of contexts not named by an EKS ARN")
    cluster.add_argument("--concurrency", type=_bounded_int(1, 32), default=4, help="contexts at once (1-32)")
    cluster.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                         help="progress bar on stderr (default: when scanning several contexts on a terminal)")
    cluster.set_defaults(run=_cluster)

    invoke = commands.add_parser("invoke", help="run the Lambda handler locally with your AWS credentials")
    invoke.add_argument("event", type=Path, metavar="EVENT.json")
    invoke.add_argument("--dry-run", action="store_true", help="read and evaluate, write nothing")
    invoke.set_defaults(run=_invoke)

    doctor = commands.add_parser("doctor", help="why is my fleet not scanned? checks every step a scan takes; "
                                                "writes nothing")
    doctor.add_argument("--account", action="append", default=[], metavar="ID",
                        help="only this target account (repeatable; default: the scanner's TARGET_ACCOUNTS)")
    doctor.add_argument("--region", action="append", default=[], metavar="NAME",
                        help="only this Region (repeatable; default: TARGET_REGIONS, else AWS_REGION)")
    doctor.add_argument("--cluster", action="append", default=[], metavar="NAME",
                        help="only clusters of this name (repeatable)")
    doctor.add_argument("--output", "-o", choices=("table", "json"), default="table")
    doctor.set_defaults(run=_doctor)

    sandbox = commands.add_parser("sandbox", help="a real scan of local stand-ins for AWS and four clusters "
                                                  "(one in EKS Auto Mode)")
    sandbox.set_defaults(run=_sandbox)

    report = commands.add_parser("report", help="the run history from the report bucket, as text and a plot")
    source = report.add_mutually_exclusive_group(required=True)
    source.add_argument("--bucket", help="the scanner's report bucket (reads runs/ with your AWS credentials)")
    source.add_argument("--dir", type=Path, help="a local copy of the bucket (holding runs/date=.../)")
    report.add_argument("--days", type=_bounded_int(1, 3660), default=30, help="how far back (default 30)")
    report.add_argument("--plot", type=Path, metavar="FILE.png", help="also draw the dashboard's series")
    report.set_defaults(run=_report)
    return parser


def _bounded_int(low: int, high: int):
    def parse(text: str) -> int:
        if not text.isdigit() or not low <= int(text) <= high:
            raise argparse.ArgumentTypeError(f"must be an integer from {low} to {high}, got {text!r}")
        return int(text)
    return parse


# -- cluster ---------------------------------------------------------------------------------------------------
def _cluster(args: argparse.Namespace) -> int:
    from handler import collector
    from handler.cluster_reader import ClusterReader
    from netpol_scan.kubeconfig import KubeconfigError, kubeconfig_paths, read, select_contexts
    from netpol_scan.local_scan import scan_contexts
    from netpol_scan.output import write

    # urllib3 logs each connection retry; the reader's one error per context says it all.
    logging.getLogger("urllib3").setLevel(logging.ERROR)
    if args.all_contexts and args.context:
        raise UsageError("--context and --all-contexts exclude each other")
    try:
        kubeconfig = read(kubeconfig_paths(args.kubeconfig))
        contexts = select_contexts(kubeconfig, args.context, args.all_contexts)
    except KubeconfigError as error:
        raise UsageError(str(error)) from error
    if args.output == "asff":
        contexts = _with_asff_identity(contexts, args.account_id, args.region)
    show = args.progress if args.progress is not None else (len(contexts) > 1 and sys.stderr.isatty())
    progress = _Progress(len(contexts), sys.stderr) if show else None
    with collector.paused():  # as the Lambda scans: the results live until written, and the collector never walks them
        scans = scan_contexts(kubeconfig, contexts, ClusterReader(), args.concurrency,
                              done=progress.step if progress else lambda _: None)
        write(scans, args.output, args.fail_on, sys.stdout)
    if any(s.error for s in scans):
        return EXIT_NOT_ASSESSED
    return EXIT_FAILING if any(s.failing(args.fail_on) for s in scans) else EXIT_OK


def _with_asff_identity(contexts: list, account_id: str | None, region: str | None) -> list:
    """ASFF needs an account and Region: EKS ARNs carry them, other clusters take --account-id and --region."""
    from handler.config import ACCOUNT_ID, REGION
    from handler.models import ClusterRef

    unnamed = [c.name for c in contexts if c.ref is None]
    if not unnamed:
        return contexts
    if not (account_id and ACCOUNT_ID.fullmatch(account_id) and region and REGION.fullmatch(region)):
        raise UsageError(f"context(s) {', '.join(unnamed)} are not named by an EKS cluster ARN; ASFF findings "
                         "need an account and Region: pass --account-id (12 digits) and --region")
    return [c if c.ref else replace(c, ref=ClusterRef(account_id, region, c.cluster or c.name)) for c in contexts]


class _Progress:
    """A one-line progress bar on stderr: contexts done of all, and the last one finished."""

    WIDTH = 30

    def __init__(self, total: int, stream: TextIO) -> None:
        self.total, self.done, self.stream = total, 0, stream

    def step(self, scan: Any) -> None:
        self.done += 1
        filled = self.WIDTH * self.done // self.total
        mark = "NOT ASSESSED" if scan.error else "ok"
        self.stream.write(f"\r[{'#' * filled}{'.' * (self.WIDTH - filled)}] {self.done}/{self.total} "
                          f"{scan.context.name[:40]} {mark}\x1b[K")
        if self.done == self.total:
            self.stream.write("\n")
        self.stream.flush()


# -- invoke ----------------------------------------------------------------------------------------------------
def _invoke(args: argparse.Namespace) -> int:
    event = _load_event(args.event)
    if args.dry_run:
        event["dry_run"] = True
    from handler.errors import ConfigError, EventError
    from netpol_scan.lambda_context import LambdaContext

    try:
        # The function's logs and EMF metrics go to stdout in Lambda; here to stderr, so that stdout is the
        # summary alone. Powertools binds its log stream when handler.app is first imported.
        with contextlib.redirect_stdout(sys.stderr):
            from handler.app import lambda_handler

            summary = lambda_handler(event, LambdaContext(function_name="eks-netpol-scanner-local"))
    except (ConfigError, EventError) as error:
        raise UsageError(str(error)) from error
    except Exception as error:  # what Lambda would report as the invocation's error
        print(f"netpol-scan invoke: the handler failed: {type(error).__name__}: {error}", file=sys.stderr)
        return EXIT_ERROR
    print(json.dumps(summary, indent=2))
    return EXIT_NOT_ASSESSED if summary.get("clusters_failed") or summary.get("accounts_failed") else EXIT_OK


def _load_event(path: Path) -> dict[str, Any]:
    try:
        event = json.loads(path.read_text())
    except OSError as error:
        raise UsageError(f"cannot read {path}: {error.strerror or error}") from error
    except ValueError as error:
        raise UsageError(f"{path} is not JSON: {error}") from error
    if not isinstance(event, dict):
        raise UsageError(f"{path} must hold a JSON object (see events/*.json), got {type(event).__name__}")
    return event


# -- doctor ----------------------------------------------------------------------------------------------------
def _doctor(args: argparse.Namespace) -> int:
    import os

    import boto3

    from handler import doctor
    from handler.config import Settings
    from handler.errors import ConfigError, EventError

    event = {"doctor": True, **{field: values for field, values in (("accounts", args.account),
                                                                     ("regions", args.region),
                                                                     ("clusters", args.cluster)) if values}}
    # The scanner's own settings, from the same variables as the function's; the doctor writes no report, so a
    # REPORT_BUCKET is not needed to run it.
    env = {**os.environ, "REPORT_BUCKET": os.environ.get("REPORT_BUCKET") or "not-needed-by-the-doctor"}
    logging.getLogger("urllib3").setLevel(logging.ERROR)  # connection retries: the check's row says it
    try:
        settings = Settings.from_env(env)
        diagnosis = doctor.run_doctor(settings, doctor.doctor_request(event), boto3.Session(), in_function=False)
    except (ConfigError, EventError) as error:
        raise UsageError(str(error)) from error
    print(json.dumps(diagnosis.to_dict(), indent=2) if args.output == "json" else doctor.table(diagnosis))
    return EXIT_NOT_ASSESSED if diagnosis.gaps else EXIT_OK


# -- sandbox and report ----------------------------------------------------------------------------------------
def _sandbox(args: argparse.Namespace) -> int:
    try:
        from netpol_scan.sandbox import demo
    except ImportError as error:
        raise UsageError(f"the sandbox needs the sandbox extra ({error.name} is missing): "
                         "pip install 'eks-netpol-scanner[sandbox]'") from error
    return demo.main()


def _report(args: argparse.Namespace) -> int:
    from netpol_scan import report

    try:
        runs = report.load_runs(report.source(args.bucket, args.dir), args.days)
    except report.ReportError as error:
        raise UsageError(str(error)) from error
    print(report.table(runs))
    if args.plot:
        try:
            report.plot(runs, args.plot)
        except ImportError as error:
            raise UsageError("--plot needs matplotlib: pip install 'eks-netpol-scanner[report]'") from error
        print(f"wrote {args.plot}")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
