"""Benchmark: each Lambda function's package (its code plus its layers) and the functions' cold imports, against
the interpreter's own startup.

    .venv/bin/python -m bench.package [--no-build] [--runs 9]

1. Size: runs `sam build` (unless --no-build and .aws-sam/build holds a build) and reports, from the built
   template, one row per function: the function's directory plus every layer it uses (what Lambda's 250 MB
   unzipped limit counts), as the sum of file sizes and as DEFLATE zips, and its ratio to the 90 MB budget; a
   row per layer; what one deploy uploads (each artifact once) against every function shipping the layer's
   content itself; and the largest entries.
2. Cold import: the template builds for arm64 (manylinux2014_aarch64 wheels), which cannot be imported on this
   x86_64 machine, so the Makefile's own targets (build-DependenciesLayer, build-ScannerFunction) build the same
   package for this machine's platform in a scratch directory. `import handler.app` and `import handler.worker`
   are timed in fresh python3.12 processes: -S -s (no site), PYTHONPATH = the function's directory, then the
   layer's python/ (Lambda's /var/task, then /opt/python), PYTHONDONTWRITEBYTECODE=1 (Lambda's file system is
   read-only: only the bytecode in the zip is used), and the variables Lambda sets. The baseline is
   `python3.12 -S -s -c pass` under the same flags, in the same rounds; the cold import cost is the median of
   the import runs minus the median of the baseline runs. The same tree with its .pyc files removed (what the
   build shipped before it compiled bytecode) is timed in the same rounds, for the ratio. Each process's CPU
   seconds are reported beside its wall time: other work on the machine stretches the wall time far more. The
   worker imports the kubernetes client with its first cluster read: a row without a budget shows that too.

Exits 1 when a function's package is over 90 MB unzipped or a function's cold import costs over 0.40 s (wall);
when that is missed while the timed processes spent over 15% of their wall time off the CPU (a loaded machine),
the output says the floor could not be judged there, and still exits 1.
Numbers and method: docs/benchmarks.md.
"""
from __future__ import annotations

import argparse
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import yaml

from bench.common import verdict

ROOT = Path(__file__).resolve().parent.parent
BUILD_DIR = ROOT / ".aws-sam" / "build"
MAX_FUNCTION_MB = 90.0
MAX_COLD_IMPORT_SECONDS = 0.40
ENTRY_MODULES = {"ScannerFunction": "handler.app", "WorkerFunction": "handler.worker"}
# What handler/cluster_reader.py imports when it builds the first cluster's client: the worker always reads one.
WORKER_FIRST_READ = ("handler.worker, then its first read's kubernetes client",
                     "import handler.worker; from kubernetes.client import ApiClient, Configuration")
LAMBDA_ENV = {  # what the Lambda runtime and the template set that the import can see
    "AWS_REGION": "eu-west-1", "AWS_DEFAULT_REGION": "eu-west-1",
    "AWS_LAMBDA_FUNCTION_NAME": "eks-netpol-scanner-ScannerFunction", "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "1024",
    "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST", "AWS_EXECUTION_ENV": "AWS_Lambda_python3.12",
    "AWS_XRAY_CONTEXT_MISSING": "LOG_ERROR", "AWS_XRAY_DAEMON_ADDRESS": "169.254.79.129:2000",
    "POWERTOOLS_SERVICE_NAME": "eks-netpol-scanner", "POWERTOOLS_METRICS_NAMESPACE": "NetpolScanner",
    "POWERTOOLS_LOG_LEVEL": "INFO", "REPORT_BUCKET": "bench-bucket", "LANG": "en_US.UTF-8", "TZ": ":UTC",
}


def find_python() -> str:
    return subprocess.run([str(ROOT / "scripts" / "find-python")], check=True, capture_output=True,
                          text=True).stdout.strip()


def mb(size: int) -> float:
    return size / 1e6


# -- size ---------------------------------------------------------------------------------------------------------

def sam_build(python: str) -> float:
    sam_bin = ROOT / ".venv-sam" / "bin"
    if not (sam_bin / "sam").exists():
        raise SystemExit(f"no {sam_bin / 'sam'}: `make .venv-sam/.installed` (or `make test`) installs aws-sam-cli "
                         "in its own virtual environment")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_") or k == "AWS_CA_BUNDLE"}
    env["PATH"] = os.pathsep.join([str(Path(python).parent), str(sam_bin), env.get("PATH", "")])
    env["SAM_CLI_TELEMETRY"] = "0"
    started = time.perf_counter()
    done = subprocess.run([str(sam_bin / "sam"), "build"], cwd=ROOT, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        sys.stderr.write(done.stdout[-4000:] + done.stderr[-4000:])
        raise SystemExit(f"sam build failed ({done.returncode})")
    return time.perf_counter() - started


class _BuiltTemplateLoader(yaml.SafeLoader):
    """Reads the built template's short tags (!Ref X) as their argument: only resource names are needed."""


_BuiltTemplateLoader.add_multi_constructor("!", lambda loader, _tag, node: loader.construct_scalar(node)
                                           if isinstance(node, yaml.ScalarNode) else None)


def built_artifacts() -> tuple[dict[str, list[str]], list[str]]:
    """{function: [layers it uses]} and every layer, from .aws-sam/build/template.yaml (each resource's build
    directory is named after it)."""
    template = yaml.load((BUILD_DIR / "template.yaml").read_text(), Loader=_BuiltTemplateLoader)  # noqa: S506
    resources = template["Resources"]
    layers = sorted(name for name, r in resources.items() if r["Type"] == "AWS::Serverless::LayerVersion")
    functions = {}
    for name, resource in sorted(resources.items()):
        if resource["Type"] == "AWS::Serverless::Function":
            used = resource["Properties"].get("Layers") or []
            functions[name] = [layer["Ref"] if isinstance(layer, dict) else layer for layer in used]
    return functions, layers


def tree_size(root: Path) -> tuple[int, dict[str, int], int]:
    """Total bytes of the files, bytes per top-level entry, and the number of files."""
    total, files, per_entry = 0, 0, {}
    for directory, _, names in os.walk(root):
        for name in names:
            path = Path(directory, name)
            if path.is_symlink():
                continue
            size = path.stat().st_size
            total += size
            files += 1
            top = path.relative_to(root).parts[0]
            per_entry[top] = per_entry.get(top, 0) + size
    return total, per_entry, files


def zipped_size(root: Path) -> int:
    with tempfile.TemporaryDirectory() as scratch:
        target = Path(scratch, "package.zip")
        with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as archive:
            for directory, _, names in os.walk(root):
                for name in sorted(names):
                    path = Path(directory, name)
                    archive.write(path, path.relative_to(root).as_posix())
        return target.stat().st_size


# -- cold import --------------------------------------------------------------------------------------------------

def host_build(python: str, target: Path) -> dict[str, Path]:
    """The layer and both functions, built by the Makefile's targets for this machine's platform."""
    dirs = {"DependenciesLayer": target / "DependenciesLayer", **{f: target / f for f in ENTRY_MODULES}}
    for name, directory in dirs.items():
        shutil.rmtree(directory, ignore_errors=True)
        directory.mkdir(parents=True)
        done = subprocess.run(["make", "-s", "-f", str(ROOT / "Makefile"), f"build-{name}",
                               f"ARTIFACTS_DIR={directory}", f"LAMBDA_PLATFORM=manylinux2014_{platform.machine()}",
                               f"LAMBDA_PYTHON={python}"], cwd=target, capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"make build-{name} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return dirs


def without_bytecode(source: Path, target: Path) -> Path:
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return target


def lambda_env(function: Path, layer: Path) -> dict[str, str]:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"),
           "PYTHONPATH": os.pathsep.join([str(function), str(layer / "python")]),
           "PYTHONDONTWRITEBYTECODE": "1", "LAMBDA_TASK_ROOT": str(function), "HOME": "/tmp"}
    env.update(LAMBDA_ENV)
    return env


def import_snippet(statement: str) -> str:
    return f"import time; t = time.perf_counter(); {statement}; print(time.perf_counter() - t)"


def time_process(python: str, code: str, env: dict[str, str]) -> tuple[float, float, str, str]:
    """Wall seconds and CPU seconds (user + system) of one fresh process, its stdout and its stderr."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run([python, "-S", "-s", "-c", code], env=env, capture_output=True, text=True, cwd="/")
    elapsed = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"{code!r} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return elapsed, cpu, done.stdout, done.stderr


def measure_imports(python: str, variants: dict[str, tuple[str, dict[str, str]]],
                    runs: int) -> dict[str, dict[str, float]]:
    """variants: label -> (import statement, environment). Interleaved: each round runs the baseline and every
    variant once, so drift and the load of the machine hit all alike."""
    baseline_env = next(iter(variants.values()))[1]
    for statement, env in variants.values():  # one untimed warm-up each: the OS file cache, not Python's
        time_process(python, import_snippet(statement), env)
    walls: dict[str, list[float]] = {"startup": [], **{label: [] for label in variants}}
    cpus: dict[str, list[float]] = {label: [] for label in walls}
    inner: dict[str, list[float]] = {label: [] for label in variants}
    for _ in range(runs):
        wall, cpu, _, _ = time_process(python, "pass", baseline_env)
        walls["startup"].append(wall)
        cpus["startup"].append(cpu)
        for label, (statement, env) in variants.items():
            wall, cpu, out, err = time_process(python, import_snippet(statement), env)
            walls[label].append(wall)
            cpus[label].append(cpu)
            inner[label].append(float(out.strip().splitlines()[-1]))
            if err.strip():
                print(f"note: {label} wrote to stderr: {err.strip()[:500]}", file=sys.stderr)
    startup = {"median": statistics.median(walls["startup"]), "cpu": statistics.median(cpus["startup"])}
    result = {"startup": startup}
    for label in variants:
        median, cpu = statistics.median(walls[label]), statistics.median(cpus[label])
        result[label] = {"median": median, "inner": statistics.median(inner[label]), "cpu": cpu,
                         "cost": median - startup["median"], "cpu_cost": cpu - startup["cpu"]}
    return result


MAX_WAITING_SHARE = 0.15  # of a timed process's wall time spent not running: more, and its wall time is the load's


def waiting_share(timing: dict[str, dict[str, float]]) -> float:
    """How much of the as-built imports' wall time their processes spent not on a CPU (waiting for one, or for
    the disk): importing is CPU work, so on a quiet machine wall and CPU time nearly agree."""
    built = [t for label, t in timing.items() if label.endswith("as built")]
    return 1 - sum(t["cpu"] for t in built) / sum(t["median"] for t in built)


def size_report(functions: dict[str, list[str]], layers: list[str]) -> list[str]:
    """Prints the size tables; returns the broken budgets."""
    sizes = {name: (tree_size(BUILD_DIR / name), zipped_size(BUILD_DIR / name)) for name in [*functions, *layers]}
    violations = []
    print("| artifact | unzipped MB (own + layers) | zipped MB (own + layers) | files | ratio to budget | budget |")
    print("|---|---|---|---|---|---|")
    for name, used in functions.items():
        parts = [name, *used]
        unzipped = sum(sizes[p][0][0] for p in parts)
        zipped = sum(sizes[p][1] for p in parts)
        files = sum(sizes[p][0][2] for p in parts)
        own = f"{mb(sizes[name][0][0]):.1f} + {mb(unzipped - sizes[name][0][0]):.1f}" if used else ""
        ratio = mb(unzipped) / MAX_FUNCTION_MB
        print(f"| function {name} | **{mb(unzipped):.1f}** ({own}) | {mb(zipped):.1f} | {files:,} | {ratio:.2f} | "
              f"<= {MAX_FUNCTION_MB:.0f} MB (Lambda: 250 MB) |")
        if mb(unzipped) > MAX_FUNCTION_MB:
            violations.append(f"{name}: {mb(unzipped):.1f} MB unzipped with its layers > {MAX_FUNCTION_MB:.0f} MB")
    for name in layers:
        users = sum(name in used for used in functions.values())
        print(f"| layer {name} (used by {users} functions) | {mb(sizes[name][0][0]):.1f} | {mb(sizes[name][1]):.1f} "
              f"| {sizes[name][0][2]:,} | - | counted in each function |")
    uploaded = sum(zipped for _, zipped in sizes.values())
    inlined = sum(sizes[name][1] + sum(sizes[layer][1] for layer in used) for name, used in functions.items())
    print()
    print(f"One deploy uploads {mb(uploaded):.1f} MB zipped (each artifact once); with the layer's content in every "
          f"function it would be {mb(inlined):.1f} MB ({uploaded / inlined:.2f}x).")
    print()
    entries: dict[str, int] = {}
    for name in sizes:
        packages = BUILD_DIR / name / "python"  # a layer's packages are under python/ (/opt/python on Lambda)
        per_entry = tree_size(packages if packages.is_dir() else BUILD_DIR / name)[1]
        entries.update({f"{name}/{entry}": size for entry, size in per_entry.items()})
    print("Largest entries (MB unzipped): " + ", ".join(
        f"{entry} {mb(size):.1f}" for entry, size in sorted(entries.items(), key=lambda kv: -kv[1])[:8]))
    return violations


def import_report(python: str, runs: int, keep: str | None) -> list[str]:
    """Prints the cold-import table; returns the broken budgets."""
    scratch = Path(keep) if keep else Path(tempfile.mkdtemp(prefix="netpol-package-"))
    try:
        print("make build-* (host platform) ...", file=sys.stderr, flush=True)
        built = host_build(python, scratch / "built")
        layer = built["DependenciesLayer"]
        plain_layer = without_bytecode(layer, scratch / "source-only" / "DependenciesLayer")
        variants = {}
        for function, module in ENTRY_MODULES.items():
            plain = without_bytecode(built[function], scratch / "source-only" / function)
            variants[f"{module}, as built"] = (f"import {module}", lambda_env(built[function], layer))
            variants[f"{module}, source only"] = (f"import {module}", lambda_env(plain, plain_layer))
        label, statement = WORKER_FIRST_READ
        variants[label] = (statement, lambda_env(built["WorkerFunction"], layer))
        print("timing imports ...", file=sys.stderr, flush=True)
        load_before = os.getloadavg()[0]
        timing = measure_imports(python, variants, runs)
        load = max(load_before, os.getloadavg()[0])
        bytecode = tree_size(layer)[0] + tree_size(built["ScannerFunction"])[0]
        source_only = tree_size(plain_layer)[0] + tree_size(scratch / "source-only" / "ScannerFunction")[0]
    finally:
        if not keep:
            shutil.rmtree(scratch, ignore_errors=True)
    cpus = os.cpu_count() or 1
    startup = timing["startup"]
    print(f"Cold import (host {platform.machine()} build by the Makefile's targets), median of {runs} fresh "
          f"processes each, interleaved; load average (1 min) up to {load:.1f} on {cpus} CPUs while timing:")
    print()
    print("| variant | process wall s | x baseline | minus startup = cold import s | CPU s, minus startup's | "
          "in-process import s | ratio to budget | budget |")
    print("|---|---|---|---|---|---|---|---|")
    print(f"| baseline: python3.12 -S -s -c pass | {startup['median']:.3f} | 1.00 | - | {startup['cpu']:.3f} (own) | "
          "- | - | - |")
    violations = []
    for label, t in timing.items():
        if label == "startup":
            continue
        as_built = label.endswith("as built")
        budget = f"<= {MAX_COLD_IMPORT_SECONDS:.2f} s" if as_built else "-"
        ratio = f"{t['cost'] / MAX_COLD_IMPORT_SECONDS:.2f}" if as_built else "-"
        print(f"| import {label} | {t['median']:.3f} | {t['median'] / startup['median']:.1f} | {t['cost']:.3f} | "
              f"{t['cpu_cost']:.3f} | {t['inner']:.3f} | {ratio} | {budget} |")
        if as_built and t["cost"] > MAX_COLD_IMPORT_SECONDS:
            violations.append(f"cold import {label}: {t['cost']:.3f} s > {MAX_COLD_IMPORT_SECONDS:.2f} s")
    print()
    for module in ENTRY_MODULES.values():
        built, source = (timing[f"{module}, {v}"] for v in ("as built", "source only"))
        print(f"{module}: {built['cost']:.3f} s as built, {built['cost'] / MAX_COLD_IMPORT_SECONDS:.2f}x the "
              f"{MAX_COLD_IMPORT_SECONDS:.2f} s floor; {built['median'] / startup['median']:.1f}x the bare "
              f"interpreter's start; {built['cost'] / source['cost']:.2f}x the same tree without bytecode "
              f"(which costs {source['cost'] - built['cost']:.3f} s more)")
    first_read = timing[WORKER_FIRST_READ[0]]
    print(f"the worker's first cluster read adds {first_read['cost'] - timing['handler.worker, as built']['cost']:.3f}"
          f" s (CPU {first_read['cpu_cost'] - timing['handler.worker, as built']['cpu_cost']:.3f} s) importing the "
          "kubernetes client, once per execution environment")
    print(f"bytecode costs +{mb(bytecode - source_only):.1f} MB unzipped (layer + one function)")
    waiting = waiting_share(timing)
    print(f"the as-built imports spent {waiting:.0%} of their wall time off the CPU (waiting for one, or the disk)")
    if violations and waiting > MAX_WAITING_SHARE:
        print(f"NOTE: the machine was loaded while timing ({waiting:.0%} of the wall time waiting; load average up to "
              f"{load:.1f} on {cpus} CPUs): the {MAX_COLD_IMPORT_SECONDS:.2f} s floor cannot be judged here (the CPU "
              "column is less affected). The verdict below stands; run again on a quiet machine.")
    return violations


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--no-build", action="store_true", help="measure the existing .aws-sam/build")
    parser.add_argument("--runs", type=int, default=9)
    parser.add_argument("--keep", metavar="DIR", help="build the host package in DIR and keep it")
    args = parser.parse_args(argv)
    python = find_python()
    version = subprocess.run([python, "-c", "import platform; print(platform.python_version())"],
                             check=True, capture_output=True, text=True).stdout.strip()
    built = None
    if not (args.no_build and (BUILD_DIR / "template.yaml").is_file()):
        print("sam build ...", file=sys.stderr, flush=True)
        built = sam_build(python)
    print(f"Python {version} ({python}), {platform.machine()}, {os.cpu_count()} CPUs; "
          f"sam build {'%.0f s' % built if built is not None else 'skipped (--no-build)'}")
    print()
    functions, layers = built_artifacts()
    violations = size_report(functions, layers)
    print()
    violations += import_report(python, args.runs, args.keep)
    return verdict(violations)


if __name__ == "__main__":
    sys.exit(main())
