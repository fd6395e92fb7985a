"""EKS bearer tokens, made with boto3 alone.

The token is the one `aws eks get-token` and eks-token produce: a presigned STS GetCallerIdentity URL, signed
with the `x-k8s-aws-id: <cluster name>` header among the signed headers, valid 60 s, base64url-encoded without
padding behind `k8s-aws-v1.`. eks-token wraps awscli to do this, which would add about 151 MB to the package and
cannot be installed beside kubernetes 37 (awscli pins python-dateutil<3), so the same few steps live here.

A token is a credential: never log it, nor the presigned URL inside it.
"""
from __future__ import annotations

import base64
from typing import Any

import boto3

TOKEN_PREFIX = "k8s-aws-v1."
CLUSTER_ID_HEADER = "x-k8s-aws-id"
TOKEN_EXPIRES_SECONDS = 60


class TokenSource:
    """Makes tokens for the clusters of one account and Region, from that account's session and the Region's
    STS endpoint. Build it in one thread; `token` may then be called from many."""

    def __init__(self, session: boto3.Session, region: str) -> None:
        self._sts = session.client("sts", region_name=region)
        self._sts.meta.events.register("provide-client-params.sts.GetCallerIdentity", _take_cluster_id)
        self._sts.meta.events.register("before-sign.sts.GetCallerIdentity", _sign_cluster_id)

    def token(self, cluster_name: str) -> str:
        url = self._sts.generate_presigned_url(
            "get_caller_identity",
            Params={CLUSTER_ID_HEADER: cluster_name},
            ExpiresIn=TOKEN_EXPIRES_SECONDS,
            HttpMethod="GET",
        )
        return TOKEN_PREFIX + base64.urlsafe_b64encode(url.encode()).decode().rstrip("=")


def eks_token(session: boto3.Session, cluster_name: str, region: str) -> str:
    """A bearer token for `cluster_name`, signed with the session's credentials by the Region's STS endpoint."""
    return TokenSource(session, region).token(cluster_name)


def _take_cluster_id(params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
    # GetCallerIdentity has no such parameter: move it out of the params before botocore validates them.
    if CLUSTER_ID_HEADER in params:
        context[CLUSTER_ID_HEADER] = params.pop(CLUSTER_ID_HEADER)


def _sign_cluster_id(request: Any, **_: Any) -> None:
    if CLUSTER_ID_HEADER in request.context:
        request.headers[CLUSTER_ID_HEADER] = request.context[CLUSTER_ID_HEADER]
