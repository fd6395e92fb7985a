"""Benchmark: the Lambda package's size and the function's cold import, against the interpreter's own startup.

    .venv/bin/python -m bench.package [--no-build] [--runs 5]

1. Size: runs `sam build` (unless --no-build and .aws-sam/build/ScannerFunction exists) and reports what it
   produced, layers included (the template has none today): the sum of file sizes (unzipped, what Lambda's
   250 MB limit counts), the size of a DEFLATE zip of it, and the 8 largest top-level entries.
2. Cold import: the template builds for arm64 (manylinux2014_aarch64 wheels), which cannot be imported on this
   x86_64 machine, so the same requirements.lock is installed for the host the way the Makefile does it
   (pip --no-compile --only-binary=:all: --target) with handler/ beside it, and `import handler.app` is timed in
   fresh python3.12 processes: -S (no site), PYTHONPATH=<that dir> only, PYTHONDONTWRITEBYTECODE=1 (nothing is
   cached, as on Lambda's read-only /var/task without __pycache__), and the variables Lambda sets. The baseline
   is `python3.12 -S -c pass` under the same flags, measured in the same command; the cold import cost is the
   median of the import runs minus the median of the baseline runs. The same is measured with the tree
   precompiled (compileall, unchecked-hash .pyc) to show what compiling bytecode in the build would cost in size
   and save in time.

Exits 1 when the package is 150 MB or more unzipped, or the cold import costs 1.5 s or more. Numbers and method:
docs/benchmarks.md.
"""
from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

from bench.common import verdict

ROOT = Path(__file__).resolve().parent.parent
BUILD_DIR = ROOT / ".aws-sam" / "build"
FUNCTION = "ScannerFunction"
MAX_UNZIPPED_MB = 150.0
MAX_COLD_IMPORT_SECONDS = 1.5
IMPORT_SNIPPET = ("import time; t = time.perf_counter(); import handler.app; "
                  "print(time.perf_counter() - t)")
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
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_") or k == "AWS_CA_BUNDLE"}
    env["PATH"] = os.pathsep.join([str(Path(python).parent), str(sam_bin), env.get("PATH", "")])
    env["SAM_CLI_TELEMETRY"] = "0"
    started = time.perf_counter()
    done = subprocess.run([str(sam_bin / "sam"), "build"], cwd=ROOT, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        sys.stderr.write(done.stdout[-4000:] + done.stderr[-4000:])
        raise SystemExit(f"sam build failed ({done.returncode})")
    return time.perf_counter() - started


def artifact_dirs() -> list[Path]:
    """The function's build directory and every layer's (SAM puts each resource in its own directory)."""
    return sorted(p for p in BUILD_DIR.iterdir() if p.is_dir())


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

def host_install(python: str, target: Path) -> None:
    done = subprocess.run([python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-compile",
                           "--only-binary=:all:", "--target", str(target), "-r", str(ROOT / "requirements.lock")],
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"pip install --target failed ({done.returncode}):\n{done.stderr[-3000:]}")
    shutil.copytree(ROOT / "handler", target / "handler",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))


def imported_sources(python: str, package: Path) -> list[str]:
    """The package's .py files that `import handler.app` loads: what a build could precompile alone."""
    code = ("import sys, handler.app; root = sys.argv[1]; print('\\n'.join(sorted({getattr(m, '__file__', None) "
            "or '' for m in list(sys.modules.values())} - {''})))")
    done = subprocess.run([python, "-S", "-s", "-c", code, str(package)], env=lambda_env(package), check=True,
                          capture_output=True, text=True, cwd="/")
    return [f for f in done.stdout.splitlines() if f.startswith(str(package) + os.sep) and f.endswith(".py")]


def compile_files(python: str, files: list[str]) -> None:
    # unchecked-hash: the .pyc stays valid whatever mtimes the zip gives the sources on Lambda.
    code = ("import py_compile, sys\nfor f in sys.stdin.read().split('\\n'):\n    "
            "py_compile.compile(f, doraise=True, invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)")
    subprocess.run([python, "-c", code], input="\n".join(files), text=True, check=True)


def lambda_env(package: Path) -> dict[str, str]:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(package),
           "PYTHONDONTWRITEBYTECODE": "1", "LAMBDA_TASK_ROOT": str(package), "HOME": "/tmp"}
    env.update(LAMBDA_ENV)
    return env


def time_process(python: str, code: str, env: dict[str, str]) -> tuple[float, str, str]:
    """Wall seconds of one fresh process, its stdout and its stderr."""
    started = time.perf_counter()
    done = subprocess.run([python, "-S", "-s", "-c", code], env=env, capture_output=True, text=True, cwd="/")
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{code!r} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return elapsed, done.stdout, done.stderr


def measure_imports(python: str, packages: dict[str, Path], runs: int) -> dict[str, dict[str, float]]:
    """Interleaved: each round runs the baseline and every package once, so drift hits all alike."""
    samples: dict[str, list[float]] = {"startup": []}
    inner: dict[str, list[float]] = {}
    stderr_seen: dict[str, str] = {}
    for label in packages:
        samples[label], inner[label] = [], []
    for label, package in packages.items():  # one untimed warm-up each: the OS file cache, not Python's
        time_process(python, IMPORT_SNIPPET, lambda_env(package))
    for _ in range(runs):
        samples["startup"].append(time_process(python, "pass", lambda_env(next(iter(packages.values()))))[0])
        for label, package in packages.items():
            wall, out, err = time_process(python, IMPORT_SNIPPET, lambda_env(package))
            samples[label].append(wall)
            inner[label].append(float(out.strip().splitlines()[-1]))
            if err.strip():
                stderr_seen[label] = err.strip()
    result = {"startup": {"median": statistics.median(samples["startup"])}}
    for label in packages:
        result[label] = {"median": statistics.median(samples[label]), "inner": statistics.median(inner[label])}
        result[label]["cost"] = result[label]["median"] - result["startup"]["median"]
    for label, err in stderr_seen.items():
        print(f"note: {label} import wrote to stderr: {err[:500]}", file=sys.stderr)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--no-build", action="store_true", help="measure the existing .aws-sam/build")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--keep", metavar="DIR", help="keep the host install in DIR (reused when it exists)")
    args = parser.parse_args(argv)
    python = find_python()
    version = subprocess.run([python, "-c", "import platform; print(platform.python_version())"],
                             check=True, capture_output=True, text=True).stdout.strip()
    violations = []

    built = None
    if not (args.no_build and (BUILD_DIR / FUNCTION).is_dir()):
        print("sam build ...", file=sys.stderr, flush=True)
        built = sam_build(python)
    dirs = artifact_dirs()
    total_unzipped, total_zipped, entries, file_count = 0, 0, {}, 0
    for directory in dirs:
        size, per_entry, files = tree_size(directory)
        total_unzipped += size
        file_count += files
        total_zipped += zipped_size(directory)
        entries.update({f"{directory.name}/{k}" if directory.name != FUNCTION else k: v
                        for k, v in per_entry.items()})

    scratch = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="netpol-package-"))
    try:
        plain, compiled, partial = scratch / "task", scratch / "task-pyc", scratch / "task-pyc-imported"
        if not (plain / "handler" / "app.py").exists():
            print("pip install --target (host platform) ...", file=sys.stderr, flush=True)
            shutil.rmtree(plain, ignore_errors=True)
            host_install(python, plain)
        shutil.rmtree(plain / "handler")  # always the current handler/
        shutil.copytree(ROOT / "handler", plain / "handler", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        shutil.rmtree(compiled, ignore_errors=True)
        shutil.copytree(plain, compiled)
        # unchecked-hash: the .pyc stays valid whatever mtimes the zip gives the sources on Lambda.
        subprocess.run([python, "-m", "compileall", "-q", "-j", "0", "--invalidation-mode", "unchecked-hash",
                        str(compiled)], check=True, stdout=subprocess.DEVNULL)
        shutil.rmtree(partial, ignore_errors=True)
        shutil.copytree(plain, partial)
        imported = imported_sources(python, partial)
        compile_files(python, imported)
        sizes = {label: (tree_size(path)[0], zipped_size(path))
                 for label, path in (("source only", plain), ("precompiled .pyc", compiled),
                                     ("precompiled, imported modules only", partial))}
        print("timing imports ...", file=sys.stderr, flush=True)
        timing = measure_imports(python, {"source only": plain, "precompiled .pyc": compiled,
                                          "precompiled, imported modules only": partial}, args.runs)
    finally:
        if not args.keep:
            shutil.rmtree(scratch, ignore_errors=True)

    print(f"Python {version} ({python}), {platform.machine()}, {os.cpu_count()} CPUs; "
          f"sam build {'%.0f s' % built if built is not None else 'skipped (--no-build)'}")
    print()
    print(f"Package (.aws-sam/build: {', '.join(d.name for d in dirs)}; arm64 wheels), {file_count} files:")
    print()
    print("| measure | value | budget |")
    print("|---|---|---|")
    print(f"| unzipped (sum of file sizes) | {mb(total_unzipped):.1f} MB ({total_unzipped / 2**20:.1f} MiB) | "
          f"< {MAX_UNZIPPED_MB:.0f} MB (Lambda limit 250 MB) |")
    print(f"| zipped (DEFLATE) | {mb(total_zipped):.1f} MB | - |")
    print()
    print("| largest entries | MB unzipped | share |")
    print("|---|---|---|")
    for name, size in sorted(entries.items(), key=lambda kv: -kv[1])[:8]:
        print(f"| {name} | {mb(size):.1f} | {100 * size / total_unzipped:.0f}% |")
    print()
    startup = timing["startup"]["median"]
    print(f"Cold import of handler.app (host x86_64 install of the same lock), median of {args.runs} fresh "
          "processes each:")
    print()
    print("| variant | unzipped MB | zipped MB | process wall s | minus startup = cold import s | "
          "in-process import s | budget |")
    print("|---|---|---|---|---|---|---|")
    print(f"| baseline: python3.12 -S -c pass | - | - | {startup:.3f} | - | - | - |")
    for label, (unzipped, zipped) in sizes.items():
        t = timing[label]
        print(f"| import handler.app, {label} | {mb(unzipped):.1f} | {mb(zipped):.1f} | {t['median']:.3f} | "
              f"{t['cost']:.3f} | {t['inner']:.3f} | < {MAX_COLD_IMPORT_SECONDS} s |")
    print()
    (host_plain, zip_plain) = sizes["source only"]
    for label in ("precompiled .pyc", "precompiled, imported modules only"):
        saved = timing["source only"]["cost"] - timing[label]["cost"]
        print(f"{label}: +{mb(sizes[label][0] - host_plain):.1f} MB unzipped, "
              f"+{mb(sizes[label][1] - zip_plain):.1f} MB zipped, {saved:.3f} s less cold import "
              f"({100 * saved / timing['source only']['cost']:.0f}%)"
              + (f"; {len(imported)} modules imported at cold start" if "imported" in label else ""))

    if mb(total_unzipped) >= MAX_UNZIPPED_MB:
        violations.append(f"package {mb(total_unzipped):.1f} MB unzipped >= {MAX_UNZIPPED_MB:.0f} MB")
    if timing["source only"]["cost"] >= MAX_COLD_IMPORT_SECONDS:
        violations.append(f"cold import {timing['source only']['cost']:.3f} s >= {MAX_COLD_IMPORT_SECONDS} s")
    return verdict(violations)


if __name__ == "__main__":
    sys.exit(main())
