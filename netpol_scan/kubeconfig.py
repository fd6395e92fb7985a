"""Clusters from a kubeconfig: which contexts to scan, and an API client for each, as kubectl would build it.

Any cluster works: certificates, tokens, and exec plugins (EKS's `aws eks get-token`) are handled by the
kubernetes client's own kubeconfig loader. A context whose cluster is named by an EKS ARN (what
`aws eks update-kubeconfig` writes) is known by account, Region and name, which ASFF findings need.

The kubeconfig is read once (`read`): every context's client is made from that reading. Reading it again for
each context, as `load_kube_config` does, parsed the whole YAML once a context: with 100 contexts (145 KB) that
was 0.4 s a context and 44 s for `--all-contexts`.
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
from typing import Any

import yaml
from kubernetes.client import ApiClient, Configuration
from kubernetes.config import ConfigException
from kubernetes.config.kube_config import KubeConfigLoader, KubeConfigMerger

from handler.cluster_reader import tune_transport
from handler.models import ClusterRef

DEFAULT_KUBECONFIG = "~/.kube/config"
EKS_CLUSTER_ARN = re.compile(r"arn:(aws[a-z-]*):eks:([a-z0-9-]+):([0-9]{12}):cluster/([A-Za-z0-9_-]+)")


class KubeconfigError(Exception):
    """Raised when the kubeconfig is missing or unreadable, names no such context, or a context cannot be
    loaded (its credential plugin failed, its certificate files are missing)."""


@dataclass(frozen=True)
class Kubeconfig:
    """The kubeconfig files, merged as kubectl merges KUBECONFIG's (the first file naming a cluster, user or
    context wins); each entry keeps its file's path, against which relative certificate paths resolve."""

    source: str  # the files, as KUBECONFIG lists them
    merged: Any  # kubernetes' ConfigNode, as KubeConfigMerger makes it for KubeConfigLoader

    def loader(self, context: str | None = None) -> KubeConfigLoader:
        return KubeConfigLoader(config_dict=self.merged, active_context=context, config_base_path=None)


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


def read(paths: list[Path]) -> Kubeconfig:
    """The kubeconfig files, read and merged once; KubeconfigError when one is not a kubeconfig."""
    source = os.pathsep.join(map(str, paths))
    try:
        merged = KubeConfigMerger(source).config
        if merged is None:
            raise ConfigException("no configuration found")
        return Kubeconfig(source, merged)
    except (ConfigException, OSError, ValueError, yaml.YAMLError) as error:
        raise KubeconfigError(f"cannot read kubeconfig {source}: {error}") from error
    except (TypeError, AttributeError) as error:  # the merger indexes into the document as into a mapping
        raise KubeconfigError(f"cannot read kubeconfig {source}: it is not a kubeconfig (a YAML mapping of "
                              f"clusters, users and contexts): {error}") from error


def select_contexts(kubeconfig: Kubeconfig, names: list[str], every: bool) -> list[Context]:
    """The named contexts, or all of them, or the current one; unknown names are an error listing the known."""
    try:
        loader = kubeconfig.loader()
        contexts, current = loader.list_contexts(), loader.current_context
    except (ConfigException, OSError, ValueError) as error:
        raise KubeconfigError(f"cannot read kubeconfig {kubeconfig.source}: {error}") from error
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


def api_client(kubeconfig: Kubeconfig, context: Context) -> ApiClient:
    """A client for the context, with the scanner's transport settings. Runs the context's exec plugin."""
    config = Configuration()
    with _plugin_errors() as errors:
        try:
            # What load_kube_config does, from the reading already made; nothing is written back to the files.
            kubeconfig.loader(context.name).load_and_set(config)
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
