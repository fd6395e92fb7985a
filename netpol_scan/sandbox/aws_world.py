"""An AWS "world" for integration tests and the local sandbox: a moto server over HTTP holding several accounts,
with EKS clusters whose endpoints are real TLS Kubernetes API test servers.

moto runs in this process (ThreadedMotoServer), so its backends can be reached from Python: that is how the
clusters get a working endpoint and CA (moto's own are fake) and how the token verifier finds the secrets moto
issued. The world never touches os.environ: `env()` and `session()` carry the settings instead.
"""
from __future__ import annotations

import base64
import logging
import os
import socket
import tempfile
from typing import Any

import boto3
import botocore.session
from botocore.credentials import Credentials
from moto.eks.models import eks_backends
from moto.iam.models import iam_backends
from moto.server import ThreadedMotoServer
from moto.sts.models import sts_backends

from netpol_scan.sandbox.kube_api import Cluster, EksTokenVerifier, KubeApiServer, generate_tls

DEFAULT_ACCOUNT = "123456789012"  # moto's account for its default "testing" credentials
DEFAULT_REGION = "eu-west-1"
DEFAULT_IDENTITY = f"arn:aws:iam::{DEFAULT_ACCOUNT}:user/moto"
SETUP_ROLE = "WorldSetup"
PROFILE = "world"


def closed_port() -> int:
    """A local port nothing listens on (connections are refused)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class World:
    """A moto server with Security Hub, S3, STS and EKS, and fake EKS clusters reachable over TLS."""

    def __init__(self, region: str = DEFAULT_REGION):
        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's per-request access log
        self.region = region
        self._moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self._moto.start()
        host, port = self._moto.get_host_and_port()
        self.endpoint = f"http://{host}:{port}"
        self.verifier = EksTokenVerifier({f"{host}:{port}"}, self.secret_for)
        self._servers: dict[tuple[str, str, str], KubeApiServer] = {}
        self._clusters: dict[tuple[str, str, str], Cluster] = {}
        self._credentials: dict[str, Credentials] = {}
        self._sessions: dict[tuple[str, str], boto3.Session] = {}
        self._config_dir = tempfile.TemporaryDirectory(prefix="aws-world-")
        self._config_file = os.path.join(self._config_dir.name, "config")
        with open(self._config_file, "w") as config:
            config.write(f"[profile {PROFILE}]\nendpoint_url = {self.endpoint}\n")

    def __enter__(self) -> World:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- pointing clients at the world -------------------------------------------------------------------------
    def env(self) -> dict[str, str]:
        """Environment variables that point boto3 (in this or a child process) at the world."""
        return {"AWS_ENDPOINT_URL": self.endpoint, "AWS_ACCESS_KEY_ID": "testing",
                "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": self.region, "AWS_REGION": self.region}

    def session(self, account: str = DEFAULT_ACCOUNT, region: str | None = None) -> boto3.Session:
        """A boto3 Session acting in `account`, whose clients talk to the world (through a config file that sets
        endpoint_url, so nothing depends on the process environment)."""
        key = (account, region or self.region)
        if key not in self._sessions:  # kept, so that clients share the session's loaded service models
            core = botocore.session.Session()
            core.set_config_variable("config_file", self._config_file)
            credentials = self.credentials(account)
            self._sessions[key] = boto3.Session(
                botocore_session=core, profile_name=PROFILE, region_name=key[1],
                aws_access_key_id=credentials.access_key, aws_secret_access_key=credentials.secret_key,
                aws_session_token=credentials.token)
        return self._sessions[key]

    def credentials(self, account: str = DEFAULT_ACCOUNT) -> Credentials:
        """moto's default credentials, or those of role WorldSetup in another account (assumed through STS)."""
        if account == DEFAULT_ACCOUNT:
            return Credentials("testing", "testing")
        if account not in self._credentials:
            sts = self.session().client("sts")
            issued = sts.assume_role(RoleArn=f"arn:aws:iam::{account}:role/{SETUP_ROLE}",
                                     RoleSessionName="world-setup")["Credentials"]
            self._credentials[account] = Credentials(issued["AccessKeyId"], issued["SecretAccessKey"],
                                                     issued["SessionToken"])
        return self._credentials[account]

    def client(self, service: str, account: str = DEFAULT_ACCOUNT, region: str | None = None) -> Any:
        return self.session(account, region).client(service)

    def secret_for(self, access_key: str) -> tuple[str, str | None, str] | None:
        """What the token verifier needs for a key moto knows: (secret, session token, identity ARN)."""
        if access_key == "testing":
            return "testing", None, DEFAULT_IDENTITY
        for account_backends in list(sts_backends.values()):
            for backend in list(account_backends.values()):  # one per partition ("aws", "aws-cn", ...)
                for role in list(backend.assumed_roles):
                    if role.access_key_id == access_key:
                        return role.secret_access_key, role.session_token, role.arn
        for account_backends in list(iam_backends.values()):
            for backend in list(account_backends.values()):
                user = backend.get_user_from_access_key_id(access_key)
                if user is not None:
                    key = next(k for k in backend.list_access_keys(user.name) if k.access_key_id == access_key)
                    return key.secret_access_key, None, user.arn
        return None

    # -- resources ---------------------------------------------------------------------------------------------
    def enable_security_hub(self, account: str = DEFAULT_ACCOUNT, region: str | None = None) -> None:
        self.client("securityhub", account, region).enable_security_hub(EnableDefaultStandards=False)

    def create_bucket(self, name: str, region: str | None = None) -> None:
        region = region or self.region
        configuration = {} if region == "us-east-1" else {
            "CreateBucketConfiguration": {"LocationConstraint": region}}
        self.client("s3", DEFAULT_ACCOUNT, region).create_bucket(Bucket=name, **configuration)

    def add_cluster(self, account: str, region: str, cluster: Cluster, reachable: bool = True,
                    version: str = "1.31", auto_mode: bool = False) -> str:
        """Creates the EKS cluster in moto and points it at a Kubernetes API test server (or, when not reachable,
        at a closed local port with a CA of its own). `auto_mode`: DescribeCluster says computeConfig.enabled
        (moto keeps no computeConfig of its own). Returns the cluster ARN."""
        eks = self.client("eks", account, region)
        arn = eks.create_cluster(name=cluster.name, version=version,
                                 roleArn=f"arn:aws:iam::{account}:role/eks-cluster",
                                 resourcesVpcConfig={"subnetIds": ["subnet-00000001"]})["cluster"]["arn"]
        self._clusters[(account, region, cluster.name)] = cluster
        if auto_mode:
            eks_backends[account][region].clusters[cluster.name].compute_config = {
                "enabled": True, "nodeRoleArn": f"arn:aws:iam::{account}:role/AmazonEKSAutoNodeRole"}
        if reachable:
            self.make_reachable(account, region, cluster.name)
        else:
            self._point(account, region, cluster.name, f"https://127.0.0.1:{closed_port()}",
                        generate_tls().ca_pem)
        return arn

    def make_reachable(self, account: str, region: str, name: str) -> KubeApiServer:
        """Starts (or restarts) the API server of a cluster added before and points EKS at it."""
        key = (account, region, name)
        if key in self._servers:
            self._servers.pop(key).stop()
        server = KubeApiServer(self._clusters[key], self.verifier).start()
        self._servers[key] = server
        self._point(account, region, name, server.endpoint, server.ca_pem)
        return server

    def server(self, account: str, region: str, name: str) -> KubeApiServer:
        return self._servers[(account, region, name)]

    def delete_cluster(self, account: str, region: str, name: str) -> None:
        self.client("eks", account, region).delete_cluster(name=name)
        self._clusters.pop((account, region, name), None)
        server = self._servers.pop((account, region, name), None)
        if server is not None:
            server.stop()

    def _point(self, account: str, region: str, name: str, endpoint: str, ca_pem: bytes) -> None:
        record = eks_backends[account][region].clusters[name]
        record.endpoint = endpoint
        record.certificate_authority = {"data": base64.b64encode(ca_pem).decode()}

    # -- reading results ---------------------------------------------------------------------------------------
    def findings(self, account: str = DEFAULT_ACCOUNT, region: str | None = None) -> list[dict[str, Any]]:
        hub = self.client("securityhub", account, region)
        return [f for page in hub.get_paginator("get_findings").paginate() for f in page["Findings"]]

    def assumed_roles(self) -> list[str]:
        """The ARN of every role STS issued credentials for so far (moto's STS state), in order: what AssumeRole
        calls succeeded, as CloudTrail would tell."""
        return [role.role_arn for account_backends in list(sts_backends.values())
                for backend in list(account_backends.values()) for role in list(backend.assumed_roles)]

    def s3_keys(self, bucket: str) -> list[str]:
        s3 = self.client("s3")
        return [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket)
                for o in page.get("Contents", [])]

    def stop(self) -> None:
        for server in self._servers.values():
            server.stop()
        self._servers.clear()
        self._moto.stop()
        self._config_dir.cleanup()
