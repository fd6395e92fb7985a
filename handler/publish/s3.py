"""The S3 side: per-cluster state, and each run's findings and report, laid out for Athena.

    runs/date=YYYY-MM-DD/run=<run id>.json                                        run report (summary + keys)
    findings/date=YYYY-MM-DD/account=<id>/region=<region>/cluster=<name>/run=<run id>.jsonl.gz
                                                                                  ASFF findings, one per line
    state/account=<id>/region=<region>/cluster=<name>.json.gz                     what was published before

Partition keys use Hive's `key=value` form so that Athena (partition projection or MSCK REPAIR) can query by
date, account, Region and cluster. The bucket lives in the scanner's account and is always written with the
function's own credentials, never a member account's.

Objects that two runs may write at once are written conditionally (S3 conditional writes): a cluster's state
with If-Match on the ETag it was read with (If-None-Match for a new one), so that of two overlapping runs the
loser reads the winner's state and plans again; a run report with If-None-Match, so that it is written once.
"""
from __future__ import annotations

import gzip
import io
import json
from collections.abc import Iterable, Iterator
from typing import Any, NamedTuple

from botocore.exceptions import BotoCoreError, ClientError

from handler.errors import PublishError, WriteConflict
from handler.models import ClusterRef
from handler.publish import compact_json
from handler.state import ClusterState

STATE_PREFIX = "state/"
CONFLICT_CODES = frozenset({"PreconditionFailed", "ConditionalRequestConflict", "412", "409"})


class StoredState(NamedTuple):
    """A cluster's state as read, with the ETag that a conditional write of the next state must match (None: no
    state yet, so the next must be new)."""

    state: ClusterState | None
    etag: str | None


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

    def load_state(self, cluster: ClusterRef) -> StoredState:
        try:
            response = self._s3.get_object(Bucket=self.bucket, Key=state_key(cluster))
            body = response["Body"].read()
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                return StoredState(None, None)
            raise PublishError(f"cannot read state of {cluster} from s3://{self.bucket}: {error}") from error
        except BotoCoreError as error:
            raise PublishError(f"cannot read state of {cluster} from s3://{self.bucket}: {error}") from error
        return StoredState(ClusterState.from_json(gzip.decompress(body).decode()), response["ETag"])

    def known_clusters(self, account_id: str, region: str) -> list[str]:
        """Names of the clusters of an account and Region that the scanner has published findings for."""
        prefix = _account_region_prefix(account_id, region)
        return [key[len(prefix) + len("cluster="):-len(".json.gz")] for key in self.keys(prefix)
                if key[len(prefix):].startswith("cluster=") and key.endswith(".json.gz")]

    def save_state(self, state: ClusterState, read: StoredState) -> None:
        """Writes the next state only over the one it was planned from; WriteConflict when another run wrote
        in between. Encoded and compressed a finding at a time (ClusterState.encoded)."""
        body = io.BytesIO()
        with gzip.GzipFile(fileobj=body, mode="wb") as file:
            file.writelines(state.encoded())
        self._put(state_key(state.cluster), body.getvalue(), "application/gzip", **only_over(read.etag))

    def delete_state(self, cluster: ClusterRef, read: StoredState) -> None:
        """Forgets a cluster (it is gone and its findings are archived), unless another run wrote its state."""
        if read.etag is None:
            return
        try:
            self._s3.delete_object(Bucket=self.bucket, Key=state_key(cluster), IfMatch=read.etag)
        except (ClientError, BotoCoreError) as error:
            raise _write_error(error, f"s3://{self.bucket}/{state_key(cluster)}") from error

    def write_findings(self, cluster: ClusterRef, date: str, run_id: str, lines: GzipJsonLines) -> str:
        key = findings_key(cluster, date, run_id)
        self._put(key, lines.close(), "application/gzip")
        return key

    def write_report(self, date: str, run_id: str, report: dict[str, Any]) -> str:
        """Writes a run's report once; WriteConflict when it was written already (another worker finished it)."""
        key = report_key(date, run_id)
        self.put_json(key, report, IfNoneMatch="*")
        return key

    def put_json(self, key: str, data: Any, **conditions: str) -> None:
        """Writes JSON, under put_object's conditions if any (IfMatch, IfNoneMatch): WriteConflict if they fail."""
        self._put(key, compact_json(data), "application/json", **conditions)

    def get_json_versioned(self, key: str) -> tuple[Any, str | None]:
        """An object's JSON and ETag, or (None, None) when there is no such object."""
        try:
            response = self._s3.get_object(Bucket=self.bucket, Key=key)
            return json.loads(response["Body"].read()), response["ETag"]
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                return None, None
            raise PublishError(f"cannot read s3://{self.bucket}/{key}: {error}") from error
        except BotoCoreError as error:
            raise PublishError(f"cannot read s3://{self.bucket}/{key}: {error}") from error

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

    def _put(self, key: str, body: bytes, content_type: str, **conditions: str) -> None:
        # No Content-Encoding on the .gz objects: they are gzip files, to be read as such (Athena goes by the
        # extension), not bodies for an HTTP client to inflate on the way.
        try:
            self._s3.put_object(Bucket=self.bucket, Key=key, Body=body, ContentType=content_type, **conditions)
        except (ClientError, BotoCoreError) as error:
            raise _write_error(error, f"s3://{self.bucket}/{key}") from error


def only_over(etag: str | None) -> dict[str, str]:
    """put_object's conditions for a write over the version read (its ETag), or of a new object (None)."""
    return {"IfMatch": etag} if etag else {"IfNoneMatch": "*"}


def _write_error(error: ClientError | BotoCoreError, where: str) -> PublishError:
    if isinstance(error, ClientError) and error.response.get("Error", {}).get("Code") in CONFLICT_CODES:
        return WriteConflict(f"{where} was written by another run in the meantime")
    return PublishError(f"cannot write {where}: {error}")


class GzipJsonLines:
    """Records compressed into JSON Lines as they stream past: only the compressed bytes are held."""

    # Level 1: a third of the default level 9's CPU for the 30,000 findings of a 10,000-namespace cluster, and a
    # file 23% larger (1.7 MB instead of 1.4 MB): bench/encode_findings.py, docs/benchmarks.md.
    COMPRESS_LEVEL = 1
    LINES_A_WRITE = 100

    def __init__(self) -> None:
        self._buffer = io.BytesIO()
        self._gzip = gzip.GzipFile(fileobj=self._buffer, mode="wb", compresslevel=self.COMPRESS_LEVEL)

    def tee(self, encoded: Iterable[tuple[dict[str, Any], bytes]]) -> Iterator[tuple[dict[str, Any], bytes]]:
        """Records, each with its JSON encoding (asff.encoded_findings), written to the file as they pass on to
        whoever reads them next; compressed a hundred lines at a time (one write a line was a tenth of the cost)."""
        lines: list[bytes] = []
        for record, line in encoded:
            lines.append(line)
            if len(lines) == self.LINES_A_WRITE:
                self._write(lines)
            yield record, line
        self._write(lines)

    def _write(self, lines: list[bytes]) -> None:
        if lines:
            self._gzip.write(b"\n".join(lines) + b"\n")
            lines.clear()

    def close(self) -> bytes:
        self._gzip.close()
        return self._buffer.getvalue()


