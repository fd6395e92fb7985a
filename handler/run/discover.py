"""A run's targets: every cluster to scan (or to archive, when gone from its account), found account by account,
and the accounts and Regions that could not be listed."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import boto3

from handler.config import ScanRequest
from handler.errors import DiscoveryError, PublishError
from handler.run.report import Run
from handler.run.scan import ClusterTask, ScanContext
from handler.targets import discovery


@dataclass
class Targets:
    tasks: list[tuple[str, str, str, bool]] = field(default_factory=list)  # (account_id, region, cluster, deleted)
    failures: list[dict[str, str]] = field(default_factory=list)
    clusters_named: set[str] = field(default_factory=set)
    clusters_not_found: list[str] = field(default_factory=list)

    def cluster_tasks(self, run: Run) -> list[ClusterTask]:
        return [ClusterTask(run.run_id, run.started_at, *task) for task in self.tasks]


def discover(context: ScanContext, request: ScanRequest) -> Targets:
    """Every target cluster, found account by account in parallel (AssumeRole, then ListClusters per Region):
    a fleet of a hundred account-Regions is listed in seconds, not minutes."""
    clients, settings = context.clients, context.settings
    accounts = discovery.target_accounts(clients.base, settings, request, clients.own)
    regions = discovery.target_regions(settings, request)
    clients.sessions  # noqa: B018 - made here, in one thread: it creates clients from the base session
    with ThreadPoolExecutor(max_workers=settings.cluster_concurrency) as pool:
        found = list(pool.map(lambda account_id: _discover_account(context, request, account_id, regions), accounts))
    targets = Targets()
    for part in found:
        targets.tasks += part.tasks
        targets.failures += part.failures
        targets.clusters_named |= part.clusters_named
    targets.clusters_not_found = sorted(set(request.clusters) - targets.clusters_named)
    return targets


def _discover_account(context: ScanContext, request: ScanRequest, account_id: str, regions: list[str]) -> Targets:
    targets = Targets()
    try:
        session = context.clients.sessions.session(account_id)
    except DiscoveryError as error:
        _target_failed(context, targets, account_id, "*", error)
        return targets
    for region in regions:
        try:
            _discover_region(context, targets, request, session, account_id, region)
        except (DiscoveryError, PublishError) as error:
            _target_failed(context, targets, account_id, region, error)
    return targets


def _discover_region(context: ScanContext, targets: Targets, request: ScanRequest, session: boto3.Session,
                     account_id: str, region: str) -> None:
    target = context.clients.region_target(session, account_id, region)
    listed = discovery.cluster_names(target.eks, account_id, region)
    wanted = [n for n in listed if not request.clusters or n in request.clusters]
    targets.clusters_named.update(wanted)
    # Only a scan of the whole account and Region may conclude that a cluster is gone.
    gone = [] if request.names_clusters else sorted(set(context.store.known_clusters(account_id, region))
                                                    - set(listed))
    targets.tasks.extend((account_id, region, name, False) for name in wanted)
    targets.tasks.extend((account_id, region, name, True) for name in gone)


def _target_failed(context: ScanContext, targets: Targets, account_id: str, region: str, error: Exception) -> None:
    targets.failures.append({"account_id": account_id, "region": region, "error": str(error)})
    context.log.error("target not scanned", extra={"account_id": account_id, "region": region, "error": str(error)})
