"""The kubernetes client is imported when a cluster is first read (the scheduled function's cold start does
without it); clusters are read in parallel threads, so that first import must hold when many threads make it at
once. A fresh interpreter each time, as a Lambda execution environment's."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
THREADS = 8
SCRIPT = f"""
import base64, sys, threading, time
from handler.cluster_reader import ReadLimits, api_client
from handler.models import ClusterInfo, ClusterRef
from netpol_scan.sandbox.kube_api.server import generate_tls

assert "kubernetes" not in sys.modules
info = ClusterInfo(ClusterRef("123456789012", "eu-west-1", "alpha"), "https://127.0.0.1:1",
                   base64.b64encode(generate_tls().ca_pem).decode())
start, errors = threading.Barrier({THREADS}), []

def read(delay):
    start.wait()
    time.sleep(delay)  # spread over the import's own time: the threads come in at its different stages
    try:
        api_client(info, "token", ReadLimits()).close()
    except Exception as error:
        errors.append(repr(error))

threads = [threading.Thread(target=read, args=(i * 0.02,)) for i in range({THREADS})]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
print(errors)
"""


def test_clusters_read_in_parallel_import_the_kubernetes_client_once_and_whole():
    for _ in range(3):  # the race, when there is one, shows on most runs; three make a miss unlikely
        done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120, cwd=ROOT)
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == "[]", done.stdout
