"""Clusters from a kubeconfig: which contexts to scan, and an API client for each, as kubectl would build it.

Any cluster works: certificates, tokens, and exec plugins (EKS's `aws eks get-token`) are handled by the
kubernetes client's own kubeconfig loader. A context whose cluster is named by an EKS ARN (what
`aws eks update-kubeconfig` writes) is known by account, Region and name, which ASFF findings need.
"""
from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from kubernetes.client import ApiClient, Configuration
from kubernetes.config import ConfigException, list_kube_config_contexts, load_kube_config

from handler.cluster_reader import tune_transport
from handler.models import ClusterRef

DEFAULT_KUBECONFIG = "~/.kube/config"
EKS_CLUSTER_ARN = re.compile(r"arn:(aws[a-z-]*):eks:([a-z0-9-]+):([0-9]{12}):cluster/([A-Za-z0-9_-]+)")


class KubeconfigError(Exception):
    """Raised when the kubeconfig is missing or unreadable, names no such context, or a context cannot be
    loaded (its credential plugin failed, its certificate files are missing)."""


@dataclass(frozen=True)
class Context:
    name: str
    cluster: str  # the kubeconfig's name for the cluster: an EKS ARN for clusters added by the AWS CLI
    ref: ClusterRef | None  # known only for EKS clusters


def kubeconfig_paths(explicit: str | None) -> list[Path]:
    """--kubeconfig, else KUBECONFIG (a path list, like kubectl), else ~/.kube/config."""
    raw = explicit or os.environ.get("KUBECONFIG") or DEFAULT_KUBECONFIG
    paths = [Path(p).expanduser() for p in raw.split(os.pathsep) if p]
    if not any(p.is_file() for p in paths):
        where = ", ".join(map(str, paths)) or "(empty KUBECONFIG)"
        raise KubeconfigError(f"no kubeconfig: {where} does not exist. Pass --kubeconfig or set KUBECONFIG; for "
                              "an EKS cluster, `aws eks update-kubeconfig --name CLUSTER` writes one")
    return paths


def select_contexts(paths: list[Path], names: list[str], every: bool) -> list[Context]:
    """The named contexts, or all of them, or the current one; unknown names are an error listing the known."""
    try:
        contexts, current = list_kube_config_contexts(config_file=_joined(paths))
    except (ConfigException, OSError, ValueError) as error:
        raise KubeconfigError(f"cannot read kubeconfig {_joined(paths)}: {error}") from error
    by_name = {c["name"]: c for c in contexts or []}
    if every:
        wanted = list(by_name)
    elif names:
        wanted = list(dict.fromkeys(names))
    elif current:
        wanted = [current["name"]]
    else:
        raise KubeconfigError("the kubeconfig has no current context: pass --context NAME or --all-contexts")
    unknown = [n for n in wanted if n not in by_name]
    if unknown:
        raise KubeconfigError(f"no context {', '.join(map(repr, unknown))} in the kubeconfig; it has: "
                              f"{', '.join(sorted(by_name)) or 'none'}")
    return [_context(by_name[n]) for n in wanted]


def api_client(paths: list[Path], context: Context) -> ApiClient:
    """A client for the context, with the scanner's transport settings. Runs the context's exec plugin."""
    config = Configuration()
    with _plugin_errors() as errors:
        try:
            load_kube_config(config_file=_joined(paths), context=context.name, client_configuration=config,
                             persist_config=False)
        except (ConfigException, OSError, ValueError) as error:
            raise KubeconfigError(f"context {context.name!r}: {error}") from error
    if errors:
        # The loader logs a failed exec plugin and goes on without credentials: say so rather than show a 401.
        raise KubeconfigError(f"context {context.name!r}: credential plugin failed: {'; '.join(errors)}")
    return ApiClient(tune_transport(config))


def _context(entry: dict) -> Context:
    cluster = (entry.get("context") or {}).get("cluster") or ""
    match = EKS_CLUSTER_ARN.fullmatch(cluster) or EKS_CLUSTER_ARN.fullmatch(entry["name"])
    ref = None
    if match:
        partition, region, account, name = match.groups()
        ref = ClusterRef(account, region, name, partition)
    return Context(entry["name"], cluster, ref)


def _joined(paths: list[Path]) -> str:
    return os.pathsep.join(map(str, paths))


class _Collect(logging.Handler):
    """The kubernetes loader's errors of this thread only (contexts load in parallel)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.thread = threading.get_ident()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.thread == self.thread:
            self.messages.append(record.getMessage()[:500])


@contextmanager
def _plugin_errors() -> Iterator[list[str]]:
    handler = _Collect()
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield handler.messages
    finally:
        root.removeHandler(handler)
