"""The local sandbox: a Kubernetes API server that checks EKS tokens like EKS does, an AWS stand-in (moto) holding
several accounts, a Security Hub proxy that throttles and rejects on demand, and the demo that scans them.

The project's integration tests and benchmarks run on the same stack. Needs the `sandbox` extra (moto,
cryptography); nothing here is part of the Lambda package.
"""
