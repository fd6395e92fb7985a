"""targets.discovery.cluster_names: every cluster of an account and Region once, whatever the pages say."""
from __future__ import annotations

from typing import Any

from handler.targets.discovery import cluster_names


class PagedEks:
    """An EKS client's ListClusters paginator over fixed pages (the paging itself is botocore's)."""

    def __init__(self, *pages: list[str]) -> None:
        self.pages = pages

    def get_paginator(self, operation: str) -> Any:
        assert operation == "list_clusters"
        return self

    def paginate(self) -> list[dict[str, list[str]]]:
        return [{"clusters": page} for page in self.pages]


def test_a_cluster_on_two_pages_is_listed_once():
    eks = PagedEks(["beta", "alpha"], ["alpha", "gamma"], [])
    assert cluster_names(eks, "123456789012", "eu-west-1") == ["alpha", "beta", "gamma"]
