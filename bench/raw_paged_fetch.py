"""The baseline of bench/cli.py: a raw paged fetch of a cluster's namespaces and NetworkPolicies, printed as JSON.

    python bench/raw_paged_fetch.py KUBECONFIG

The least a program can do to print the same data with the kubernetes client: the current context's server, CA
and static token read from the kubeconfig (no exec plugins), the kubernetes client's HTTP stack (Configuration,
ApiClient, urllib3) with the scanner's transport settings, the same requests the scanner's reader makes (same
paths, Accept headers, limit=500 and continue), each page parsed for its continue token and its JSON written to
stdout as it arrives (one page held at a time). It imports nothing of this project, so that it stays what it
stands for.
"""
from __future__ import annotations

import base64
import json
import sys
from typing import Any

import urllib3
import yaml
from kubernetes.client import ApiClient, Configuration

PAGE_SIZE = 500
# handler/cluster_reader.py: namespaces as metadata-only lists, NetworkPolicies as JSON.
LISTS = (("/api/v1/namespaces", "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,application/json"),
         ("/apis/networking.k8s.io/v1/networkpolicies", "application/json"))


def api_client(kubeconfig: str) -> ApiClient:
    with open(kubeconfig) as file:
        config = yaml.safe_load(file)
    context = _named(config["contexts"], config["current-context"])["context"]
    cluster = _named(config["clusters"], context["cluster"])["cluster"]
    user = _named(config["users"], context["user"])["user"]
    configuration = Configuration(host=cluster["server"])
    configuration.ca_cert_data = base64.b64decode(cluster["certificate-authority-data"]).decode()
    configuration.api_key = {"BearerToken": user["token"]}
    configuration.api_key_prefix = {"BearerToken": "Bearer"}
    configuration.retries = urllib3.Retry(total=2, connect=2, read=0, status=0, redirect=0)
    configuration.connection_pool_maxsize = 1
    return ApiClient(configuration)


def _named(entries: list[dict[str, Any]], name: str) -> dict[str, Any]:
    return next(entry for entry in entries if entry["name"] == name)


def print_pages(api: ApiClient, path: str, accept: str) -> None:
    """Writes every page of the list to stdout, one JSON document a line."""
    token = None
    while True:
        query: list[tuple[str, Any]] = [("limit", PAGE_SIZE)] + ([("continue", token)] if token else [])
        request = api.param_serialize("GET", path, query_params=query, header_params={"Accept": accept},
                                      auth_settings=["BearerToken"])
        response = api.call_api(*request, _request_timeout=(10, 60))
        body = response.read()
        if response.status != 200:
            raise SystemExit(f"HTTP {response.status} on {path}: {body[:300]!r}")
        page = json.loads(body)
        sys.stdout.buffer.write(body.rstrip(b"\n") + b"\n")
        token = (page.get("metadata") or {}).get("continue")
        if not token:
            return


def main(kubeconfig: str) -> int:
    with api_client(kubeconfig) as api:
        for path, accept in LISTS:
            print_pages(api, path, accept)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
