"""The Lambda package as the Makefile builds it (the targets `sam build` runs), for this machine's platform instead
of arm64 so that it can be imported here: the layer leaves out the asyncio client and the aiohttp stack, ships
bytecode, and the functions import and read a cluster through it."""
from __future__ import annotations

import importlib.util
import os
import platform
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LEFT_OUT = ("kubernetes/aio", "kubernetes/client/api", "aiohttp", "aiohttp_retry", "multidict", "yarl",
            "frozenlist", "aiosignal", "propcache", "aiohappyeyeballs")
UNCHECKED_HASH_PYC = 0b01  # PEP 552 flags: hash-based, source not checked

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def build(tmp_path_factory) -> dict[str, Path]:
    """The layer and the scanner function, built by the Makefile's targets for this machine's platform."""
    root = tmp_path_factory.mktemp("lambda-build")
    host_platform = f"manylinux2014_{platform.machine()}"
    dirs = {"layer": root / "DependenciesLayer", "function": root / "ScannerFunction"}
    for target, directory in (("build-DependenciesLayer", dirs["layer"]), ("build-ScannerFunction", dirs["function"])):
        directory.mkdir()
        done = subprocess.run(["make", "-s", "-f", str(ROOT / "Makefile"), target, f"ARTIFACTS_DIR={directory}",
                               f"LAMBDA_PLATFORM={host_platform}", f"LAMBDA_PYTHON={sys.executable}"],
                              cwd=root, capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, done.stderr[-3000:]
    return dirs


def lambda_python(build: dict[str, Path], code: str, args: tuple[str, ...] = (),
                  extra_path: tuple[Path, ...] = (), traced: bool = False) -> subprocess.CompletedProcess[str]:
    """Runs code as Lambda would see the package: the function's directory and the layer's python/ first (and
    nothing else unless extra_path says so). Traced: with X-Ray tracing on, as the template deploys it (Powertools
    traces where LAMBDA_TASK_ROOT is set)."""
    path = [str(build["function"]), str(build["layer"] / "python"), *map(str, extra_path)]
    env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": os.pathsep.join(path), "PYTHONDONTWRITEBYTECODE": "1",
           "AWS_REGION": "eu-west-1", "AWS_LAMBDA_FUNCTION_NAME": "test"}
    if traced:
        env.update({"LAMBDA_TASK_ROOT": str(build["function"]), "AWS_XRAY_CONTEXT_MISSING": "LOG_ERROR"})
    else:
        env["POWERTOOLS_TRACE_DISABLED"] = "1"
    return subprocess.run([sys.executable, "-S", "-s", "-c", code, *args], env=env, capture_output=True, text=True,
                          timeout=600, cwd=build["function"])


def test_layer_leaves_out_the_asyncio_client_and_its_stack(build):
    packages = build["layer"] / "python"
    assert (packages / "kubernetes" / "client" / "api_client.py").is_file()
    assert (packages / "boto3").is_dir() and (packages / "aws_lambda_powertools").is_dir()
    present = [name for name in LEFT_OUT if (packages / name).exists()]
    assert present == []
    assert not list(build["function"].glob("*.dist-info")), "dependencies belong in the layer only"


def test_every_module_ships_unchecked_hash_bytecode(build):
    sources = [p for d in build.values() for p in d.rglob("*.py")]
    assert any(p.parts[-2:] == ("handler", "app.py") for p in sources)
    missing, checked = [], []
    for source in sources:
        compiled = Path(importlib.util.cache_from_source(str(source)))
        if not compiled.is_file():
            missing.append(source)
        elif int.from_bytes(compiled.read_bytes()[4:8], "little") != UNCHECKED_HASH_PYC:
            checked.append(compiled)
    assert missing == [] and checked == []


def test_functions_import_from_the_package_without_the_batch_utilities_in_the_scanner(build):
    code = ("import sys, handler.app; scanner = set(sys.modules); import handler.worker; "
            "print('aws_lambda_powertools.utilities.batch' in scanner, 'aws_lambda_powertools.utilities.batch' "
            "in sys.modules, any(m.split('.')[0] == 'aiohttp' or m.startswith('kubernetes.aio') for m in sys.modules))")
    done = lambda_python(build, code)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split() == ["False", "True", "False"]


def test_scheduled_function_imports_no_cluster_client_at_cold_start(build):
    """Fanning out, the scheduled function reads no cluster: `import handler.app` (traced, as deployed) loads
    neither the kubernetes package, whose __init__ brings its kubeconfig loader, dynamic client, watch and stream
    (oauthlib, requests, yaml, websocket), nor yaml, nor requests and sqlite3 for the X-Ray SDK to patch: the
    tracer patches botocore only. Building a cluster's client loads kubernetes then."""
    code = textwrap.dedent("""
        import base64, sys, certifi, handler.app
        from aws_xray_sdk.core import patcher
        from handler.cluster_reader import ReadLimits, api_client
        from handler.models import ClusterInfo, ClusterRef
        loaded = lambda: ",".join(sorted({m.split(".")[0] for m in sys.modules} & set(sys.argv[1:]))) or "-"
        print(loaded(), ",".join(sorted(patcher._PATCHED_MODULES)))
        ca = base64.b64encode(open(certifi.where(), "rb").read()).decode()
        cluster = ClusterInfo(ClusterRef("111122223333", "eu-west-1", "c"), "https://c.example", ca)
        api_client(cluster, "token", ReadLimits()).close()
        print(loaded())
    """)
    done = lambda_python(build, code, ("kubernetes", "oauthlib", "requests", "websocket", "yaml", "pydantic",
                                       "sqlite3"), traced=True)
    assert done.returncode == 0, done.stderr[-3000:]
    at_import, patched, after_client = done.stdout.split()
    assert (at_import, patched) == ("-", "botocore")
    assert "kubernetes" in after_client.split(",")


def test_cluster_reader_reads_through_the_package(build):
    """The reader's own tests that do not depend on timing (paging, errors, TLS), with kubernetes and its
    dependencies taken from the layer (the test servers from the development environment after it)."""
    code = ("import sys, kubernetes, pytest; assert kubernetes.__file__.startswith(sys.argv[1]), kubernetes.__file__; "
            "sys.exit(pytest.main(['-q', '-p', 'no:randomly', '-p', 'no:cacheprovider', sys.argv[2], '-k', "
            "'pages_over or forbidden or transient or tls_is_verified']))")
    site = tuple(Path(p) for p in sys.path if p.endswith("site-packages"))
    reader_tests = ROOT / "tests" / "integration" / "test_cluster_reader.py"
    done = lambda_python(build, code, (str(build["layer"]), str(reader_tests)), (ROOT, *site))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert " passed" in done.stdout
