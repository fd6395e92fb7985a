"""The attributes of Lambda's context object that the handler and Powertools read, for local invocations
(`netpol-scan invoke`, the sandbox and the tests). Imports nothing beyond the standard library, so that the CLI
works without the sandbox extra."""
from __future__ import annotations

import os
import time
import uuid

LOCAL_ACCOUNT = "000000000000"  # no function exists: the ARN only names the invocation in the logs


class LambdaContext:
    function_version = "$LATEST"
    memory_limit_in_mb = 1024
    log_group_name = "/aws/lambda/eks-netpol-scanner"
    log_stream_name = "local"

    def __init__(self, seconds: float = 900, function_name: str = "eks-netpol-scanner") -> None:
        region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
        self.function_name = function_name
        self.invoked_function_arn = f"arn:aws:lambda:{region}:{LOCAL_ACCOUNT}:function:{function_name}"
        self.aws_request_id = str(uuid.uuid4())
        self._deadline = time.monotonic() + seconds

    def get_remaining_time_in_millis(self) -> int:
        return int((self._deadline - time.monotonic()) * 1000)
