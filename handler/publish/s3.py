"""The S3 side: per-cluster state, and each run's findings and report, laid out for Athena.

    runs/date=YYYY-MM-DD/run=<run id>.json                                        run report (summary + keys)
    findings/date=YYYY-MM-DD/account=<id>/region=<region>/cluster=<name>/run=<run id>.jsonl.gz
                                                                                  ASFF findings, one per line
    state/account=<id>/region=<region>/cluster=<name>.json.gz                     what was published before

Partition keys use Hive's `key=value` form so that Athena (partition projection or MSCK REPAIR) can query by
date, account, Region and cluster. The bucket lives in the scanner's account and is always written with the
function's own credentials, never a member account's.
"""
from __future__ import annotations

import gzip
import io
import json
from collections.abc import Iterable, Iterator
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from handler.errors import PublishError
from handler.models import ClusterRef
from handler.publish import compact_json
from handler.state import ClusterState

STATE_PREFIX = "state/"


def state_key(cluster: ClusterRef) -> str:
    return f"{_account_region_prefix(cluster.account_id, cluster.region)}cluster={cluster.name}.json.gz"


def findings_key(cluster: ClusterRef, date: str, run_id: str) -> str:
    return (f"findings/date={date}/account={cluster.account_id}/region={cluster.region}/"
            f"cluster={cluster.name}/run={run_id}.jsonl.gz")


def report_key(date: str, run_id: str) -> str:
    return f"runs/date={date}/run={run_id}.json"


def report_key_of(run_id: str) -> str:
    """A run's report key from its id alone (ids start with the run's UTC start, YYYYMMDDTHHMMSSZ)."""
    return report_key(f"{run_id[0:4]}-{run_id[4:6]}-{run_id[6:8]}", run_id)


def _account_region_prefix(account_id: str, region: str) -> str:
    return f"{STATE_PREFIX}account={account_id}/region={region}/"


class ReportStore:
    """Reads and writes the scanner's objects in its report bucket."""

    def __init__(self, s3_client: Any, bucket: str) -> None:
        self._s3 = s3_client
        self.bucket = bucket

    def load_state(self, cluster: ClusterRef) -> ClusterState | None:
        try:
            body = self._s3.get_object(Bucket=self.bucket, Key=state_key(cluster))["Body"].read()
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                return None
            raise PublishError(f"cannot read state of {cluster} from s3://{self.bucket}: {error}") from error
        except BotoCoreError as error:
            raise PublishError(f"cannot read state of {cluster} from s3://{self.bucket}: {error}") from error
        return ClusterState.from_dict(json.loads(gzip.decompress(body)))

    def known_clusters(self, account_id: str, region: str) -> list[str]:
        """Names of the clusters of an account and Region that the scanner has published findings for."""
        prefix = _account_region_prefix(account_id, region)
        return [key[len(prefix) + len("cluster="):-len(".json.gz")] for key in self.keys(prefix)
                if key[len(prefix):].startswith("cluster=") and key.endswith(".json.gz")]

    def save_state(self, state: ClusterState) -> None:
        self._put(state_key(state.cluster), gzip.compress(compact_json(state.to_dict())), "application/gzip")

    def write_findings(self, cluster: ClusterRef, date: str, run_id: str, lines: GzipJsonLines) -> str:
        key = findings_key(cluster, date, run_id)
        self._put(key, lines.close(), "application/gzip")
        return key

    def write_report(self, date: str, run_id: str, report: dict[str, Any]) -> str:
        key = report_key(date, run_id)
        self.put_json(key, report)
        return key

    def put_json(self, key: str, data: Any) -> None:
        self._put(key, compact_json(data), "application/json")

    def get_json(self, key: str) -> Any:
        try:
            return json.loads(self._s3.get_object(Bucket=self.bucket, Key=key)["Body"].read())
        except (ClientError, BotoCoreError) as error:
            raise PublishError(f"cannot read s3://{self.bucket}/{key}: {error}") from error

    def keys(self, prefix: str) -> list[str]:
        try:
            return [obj["Key"] for page in self._s3.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=prefix) for obj in page.get("Contents", [])]
        except (ClientError, BotoCoreError) as error:
            raise PublishError(f"cannot list s3://{self.bucket}/{prefix}: {error}") from error

    def folders(self, prefix: str) -> list[str]:
        """The `folder/` names right under a prefix (S3 common prefixes): one entry each, whatever they hold."""
        try:
            return [common["Prefix"] for page in self._s3.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=prefix, Delimiter="/") for common in page.get("CommonPrefixes", [])]
        except (ClientError, BotoCoreError) as error:
            raise PublishError(f"cannot list s3://{self.bucket}/{prefix}: {error}") from error

    def exists(self, key: str) -> bool:
        try:
            self._s3.head_object(Bucket=self.bucket, Key=key)
            return True
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise PublishError(f"cannot look up s3://{self.bucket}/{key}: {error}") from error

    def _put(self, key: str, body: bytes, content_type: str) -> None:
        # No Content-Encoding on the .gz objects: they are gzip files, to be read as such (Athena goes by the
        # extension), not bodies for an HTTP client to inflate on the way.
        try:
            self._s3.put_object(Bucket=self.bucket, Key=key, Body=body, ContentType=content_type)
        except (ClientError, BotoCoreError) as error:
            raise PublishError(f"cannot write s3://{self.bucket}/{key}: {error}") from error


class GzipJsonLines:
    """Records compressed into JSON Lines as they stream past: only the compressed bytes are held."""

    def __init__(self) -> None:
        self._buffer = io.BytesIO()
        self._gzip = gzip.GzipFile(fileobj=self._buffer, mode="wb")

    def tee(self, records: Iterable[dict[str, Any]]) -> Iterator[tuple[dict[str, Any], bytes]]:
        """Each record with its JSON encoding: encoded once, for the file and for whoever reads the records on."""
        for record in records:
            line = compact_json(record)
            self._gzip.write(line + b"\n")
            yield record, line

    def close(self) -> bytes:
        self._gzip.close()
        return self._buffer.getvalue()


