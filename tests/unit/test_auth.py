"""handler.targets.auth.eks_token: the presigned STS URL inside the token, checked by recomputing its SigV4
signature."""
from __future__ import annotations

import base64
from urllib.parse import parse_qs, urlsplit

import boto3
import pytest
from botocore.auth import SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from handler.targets.auth import TOKEN_PREFIX, TokenSource, eks_token

KEY, SECRET, SESSION_TOKEN = "AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", None


@pytest.fixture(autouse=True)
def isolated_aws_config(monkeypatch, tmp_path):
    """No profile, config file or endpoint override from the machine running the tests (environment only)."""
    for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_STS_REGIONAL_ENDPOINTS", "AWS_ENDPOINT_URL",
                 "AWS_ENDPOINT_URL_STS", "AWS_USE_FIPS_ENDPOINT", "AWS_USE_DUALSTACK_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "credentials"))


def session(token: str | None = SESSION_TOKEN) -> boto3.Session:
    return boto3.Session(aws_access_key_id=KEY, aws_secret_access_key=SECRET, aws_session_token=token,
                         region_name="us-east-1")


def decode(token: str) -> str:
    assert token.startswith(TOKEN_PREFIX)
    body = token[len(TOKEN_PREFIX):]
    return base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)).decode()


def query(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query, keep_blank_values=True).items()}


def signature_for(url: str, cluster: str, region: str, token: str | None = SESSION_TOKEN) -> str:
    """SigV4 query signature of the URL (minus X-Amz-Signature) with `x-k8s-aws-id: <cluster>` signed."""
    parts = urlsplit(url)
    unsigned = "&".join(p for p in parts.query.split("&") if not p.startswith("X-Amz-Signature="))
    request = AWSRequest(method="GET", url=f"{parts.scheme}://{parts.netloc}{parts.path}?{unsigned}",
                         headers={"x-k8s-aws-id": cluster})
    request.context["timestamp"] = query(url)["X-Amz-Date"]
    auth = SigV4QueryAuth(Credentials(KEY, SECRET, token), "sts", region, expires=60)
    return auth.signature(auth.string_to_sign(request, auth.canonical_request(request)), request)


@pytest.mark.parametrize("region", ["eu-west-1", "us-east-1", "ap-southeast-2"])
def test_token_format_and_url(region):
    token = eks_token(session(), "alpha", region)
    assert token.startswith("k8s-aws-v1.")
    assert "=" not in token and "+" not in token and "/" not in token
    assert len(token) < 4096
    url = decode(token)
    parts = urlsplit(url)
    assert parts.scheme == "https"
    assert parts.netloc == f"sts.{region}.amazonaws.com"
    assert parts.path in ("", "/")
    q = query(url)
    assert q["Action"] == "GetCallerIdentity"
    assert q["Version"] == "2011-06-15"
    assert q["X-Amz-Expires"] == "60"
    assert q["X-Amz-Algorithm"] == "AWS4-HMAC-SHA256"
    assert "x-k8s-aws-id" in q["X-Amz-SignedHeaders"].split(";")
    assert q["X-Amz-Credential"].startswith(f"{KEY}/") and f"/{region}/sts/aws4_request" in q["X-Amz-Credential"]
    assert "x-k8s-aws-id" not in q  # the cluster goes in a signed header, never in the query


@pytest.mark.parametrize("region", ["eu-west-1", "us-east-1"])
def test_signature_binds_the_cluster_name(region):
    url = decode(eks_token(session(), "alpha", region))
    signature = query(url)["X-Amz-Signature"]
    assert signature_for(url, "alpha", region) == signature
    assert signature_for(url, "beta", region) != signature
    assert signature_for(url, "alpha", "eu-central-1") != signature


def test_session_token_is_carried_and_signed():
    url = decode(eks_token(session("FwoGZXIvYXdzEXAMPLESESSIONTOKEN"), "alpha", "eu-west-1"))
    q = query(url)
    assert q["X-Amz-Security-Token"] == "FwoGZXIvYXdzEXAMPLESESSIONTOKEN"
    assert signature_for(url, "alpha", "eu-west-1", "FwoGZXIvYXdzEXAMPLESESSIONTOKEN") == q["X-Amz-Signature"]


def test_token_is_stable_for_same_cluster_and_instant():
    source = TokenSource(session(), "eu-west-1")
    first, second = source.token("alpha"), source.token("alpha")
    assert len(first) == len(second) < 4096
    url1, url2 = decode(first), decode(second)
    assert sorted(query(url1)) == sorted(query(url2))
    if query(url1)["X-Amz-Date"] == query(url2)["X-Amz-Date"]:
        assert first == second
    other = source.token("beta")
    assert query(decode(other))["X-Amz-Signature"] != query(url1)["X-Amz-Signature"] or \
        query(decode(other))["X-Amz-Date"] != query(url1)["X-Amz-Date"]


def test_one_source_serves_several_clusters():
    source = TokenSource(session(), "eu-west-1")
    for name in ("alpha", "beta-2", "x" * 100):
        url = decode(source.token(name))
        assert signature_for(url, name, "eu-west-1") == query(url)["X-Amz-Signature"]
        assert len(source.token(name)) < 4096
