"""A run: its targets, one cluster's scan (scan.py), the executors that run cluster tasks (inline, SQS, local),
the fan-out's manifest and progress, and the report."""
