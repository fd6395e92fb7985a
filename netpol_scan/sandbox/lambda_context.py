"""The attributes of Lambda's context object that the handler and Powertools read, for local invocations."""
from __future__ import annotations

import time
import uuid

from netpol_scan.sandbox.aws_world import DEFAULT_ACCOUNT, DEFAULT_REGION


class LambdaContext:
    function_version = "$LATEST"
    memory_limit_in_mb = 1024
    log_group_name = "/aws/lambda/eks-netpol-scanner"
    log_stream_name = "local"

    def __init__(self, seconds: float = 900, function_name: str = "eks-netpol-scanner") -> None:
        self.function_name = function_name
        self.invoked_function_arn = f"arn:aws:lambda:{DEFAULT_REGION}:{DEFAULT_ACCOUNT}:function:{function_name}"
        self.aws_request_id = str(uuid.uuid4())
        self._deadline = time.monotonic() + seconds

    def get_remaining_time_in_millis(self) -> int:
        return int((self._deadline - time.monotonic()) * 1000)
