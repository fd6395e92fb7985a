"""A deployment's wall time, modelled from what bench/fleet.py measured per cluster: an event-driven simulation of
the scan queue drained by W worker execution environments (the event source mapping's MaximumConcurrency).

What the simulation does (docs/benchmarks.md, section 3, states the same with the numbers):
- The scheduled function's time: its measured CPU on Lambda's CPU share, plus discovery's calls (per account
  AssumeRole, then per Region ListClusters and a state listing; CLUSTER_CONCURRENCY accounts at a time), the
  manifest and progress writes, and SendMessageBatch calls of ten; a message can be received once it is sent.
- W environments, each one Lambda execution environment with its own CPU share. A free environment takes the
  earliest-sent message whose FIFO message group has nothing in flight (list scheduling with SQS FIFO's rule:
  one message of a group at a time, in order). Its first message pays a cold start.
- A message's time: the event source mapping's receive/invoke/delete; the measured CPU (thread CPU of the
  message, without the clients made on first sight of an account or Region) on Lambda's CPU share; S3 requests
  as counted in the message, at per-request latencies; EKS DescribeCluster and DescribeAddon; the cluster's
  Kubernetes API requests at its latency; Security Hub calls, each at least 1 / (10 / SECURITYHUB_WORKERS_PER_ACCOUNT)
  seconds apart (the worker's rate limiter), or its latency plus the CPU that builds its batch when that is more.
  Clients: an environment's first message of an account and Region pays AssumeRole and that target's clients
  (EKS, STS for tokens, Security Hub), at the CPU measured for such messages (an environment's very first message
  at its own: botocore parses each service's model then); later ones the CPU measured for messages whose
  environment had seen their target.
- The run's report: the last message to finish also writes it (the measured finalize: one listing, one GET a
  result, one PUT).
- Progress counting: the counts of each run are replayed, at the time each message finished, against one object
  (the old single counter) and against the progress shards, with conditional writes that conflict when another
  write to the same object landed between a count's GET and its PUT.
"""
from __future__ import annotations

import heapq
import math
import random
import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from handler.run.fanout import shard_of

LAMBDA_MB_PER_VCPU = 1769  # Lambda gives one full vCPU at 1,769 MB, and CPU in proportion to memory


@dataclass(frozen=True)
class Assumptions:
    """The real deployment's numbers that the benchmark cannot measure on this machine."""

    memory_mb: int = 1024  # FunctionMemorySize (template default)
    core_speed: float = 1.0  # an arm64 (Graviton) core's speed for this code, relative to this machine's (assumed)
    workers_per_account: int = 2  # SECURITYHUB_WORKERS_PER_ACCOUNT: message groups per account and Region
    hub_calls_per_second: float = 10.0  # Security Hub BatchImportFindings per account and Region
    hub_latency: float = 0.115  # seconds a BatchImportFindings call (80-150 ms)
    s3_latency: dict[str, float] = field(default_factory=lambda: {
        "GetObject": 0.020, "PutObject": 0.040, "HeadObject": 0.015, "ListObjectsV2": 0.040,
        "DeleteObject": 0.030})
    aws_call_latency: float = 0.050  # EKS DescribeCluster / DescribeAddon / ListClusters, STS GetCallerIdentity
    assume_role_latency: float = 0.100
    sqs_send_latency: float = 0.030  # SendMessageBatch of ten
    message_overhead: float = 0.050  # the event source mapping's receive, invoke and delete, per message
    cold_start: float = 0.25  # Lambda's own part of a cold start, before the function's init
    cold_import_here: float = 1.0  # `import handler.worker` as built, on this machine (docs/benchmarks.md, section 2)
    discovery_threads: int = 8  # CLUSTER_CONCURRENCY: accounts discovered at once

    @property
    def vcpu(self) -> float:
        return self.memory_mb / LAMBDA_MB_PER_VCPU * self.core_speed

    @property
    def hub_interval(self) -> float:
        return self.workers_per_account / self.hub_calls_per_second

    def cpu(self, seconds_here: float) -> float:
        return seconds_here / self.vcpu


@dataclass(frozen=True)
class Message:
    """One cluster's queue message, as measured (CPU seconds here, request counts)."""

    index: int  # send order
    group: str  # FIFO message group
    account: str
    region: str
    cluster: str
    namespaces: int
    cpu: float  # thread CPU of the message, without its clients' share (see Fleet.clients_cpu)
    hub_cpu: float  # of which building, compressing and sending the findings (spread over the Security Hub calls)
    s3_requests: dict[str, int]  # by operation
    kube_requests: int
    kube_latency: float
    hub_calls: int


@dataclass(frozen=True)
class Fleet:
    """A measured run: its messages, the scheduled function's CPU and calls, and the costs paid on first sight."""

    messages: list[Message]
    accounts: int
    regions: int
    account_regions: int
    scheduled_cpu: float
    progress_objects: int  # shards plus shards.json, written by the scheduled function
    # Mean clients CPU a message: "first" (its environment's first: also parses each service's model), "new" (its
    # environment's first of the account and Region), "seen".
    clients_cpu: dict[str, float]
    context_cpu: float  # the worker's scan context, made once per environment
    finalize_cpu: float
    finalize_s3: dict[str, int]


@dataclass
class Schedule:
    wall: float
    scheduled: float  # the scheduled function's own time
    sends_done: float
    work: float  # sum of message times
    longest_message: tuple[float, str]
    longest_group: tuple[float, str]
    last: dict[str, Any]
    finalize: float
    cold_starts: int
    ends: list[tuple[float, Message]]  # when each message ended (for the progress replay)


def message_seconds(m: Message, a: Assumptions) -> float:
    """A message's time in a warm environment, its clients made already."""
    s3 = sum(count * a.s3_latency.get(op, 0.030) for op, count in m.s3_requests.items())
    eks = 2 * a.aws_call_latency
    kube = m.kube_requests * m.kube_latency
    if m.hub_calls:  # the first call at once, each next one when the limiter and the previous call allow
        per_call = a.hub_latency + a.cpu(m.hub_cpu) / m.hub_calls
        hub = (m.hub_calls - 1) * max(a.hub_interval, per_call) + per_call
    else:
        hub = a.cpu(m.hub_cpu)
    return a.message_overhead + a.cpu(m.cpu - m.hub_cpu) + s3 + eks + kube + hub


def scheduled_seconds(fleet: Fleet, a: Assumptions) -> tuple[float, float]:
    """(when discovery and the manifest are done, the scheduled function's CPU) in seconds."""
    per_account = a.assume_role_latency + fleet.account_regions / fleet.accounts * (
        a.aws_call_latency + a.s3_latency["ListObjectsV2"])
    discovery = a.aws_call_latency + math.ceil(fleet.accounts / a.discovery_threads) * per_account
    writes = (1 + fleet.progress_objects) * a.s3_latency["PutObject"]
    return discovery + writes, a.cpu(fleet.scheduled_cpu)


def simulate(fleet: Fleet, workers: int, a: Assumptions) -> Schedule:
    """List scheduling of the fleet's messages on `workers` environments under FIFO message groups."""
    ready_at, sched_cpu = scheduled_seconds(fleet, a)
    # Sends are made one batch of ten after another; the scheduled function's CPU is spread over its run.
    send_step = a.sqs_send_latency + sched_cpu / max(1, math.ceil(len(fleet.messages) / 10))
    available = {m.index: ready_at + (m.index // 10 + 1) * send_step for m in fleet.messages}
    sends_done = max(available.values(), default=ready_at)
    groups: dict[str, list[Message]] = defaultdict(list)
    for m in sorted(fleet.messages, key=lambda m: m.index):
        groups[m.group].append(m)
    heads = {g: 0 for g in groups}
    group_free = {g: 0.0 for g in groups}
    envs = [(0.0, i) for i in range(workers)]
    heapq.heapify(envs)
    seen_targets: list[set[tuple[str, str]]] = [set() for _ in range(workers)]
    cold = [True] * workers
    cold_seconds = a.cold_start + a.cpu(a.cold_import_here + fleet.context_cpu) + a.aws_call_latency
    ends: list[tuple[float, Message]] = []
    group_work: dict[str, float] = defaultdict(float)
    work, longest, last = 0.0, (0.0, ""), {"end": 0.0}
    remaining = len(fleet.messages)
    while remaining:
        free, env = heapq.heappop(envs)
        start, _, group = min((max(free, available[groups[g][h].index], group_free[g]), groups[g][h].index, g)
                              for g, h in heads.items() if h < len(groups[g]))
        m = groups[group][heads[group]]
        heads[group] += 1
        seconds = message_seconds(m, a)
        if cold[env]:
            seconds += cold_seconds + a.assume_role_latency + a.cpu(fleet.clients_cpu["first"])
            cold[env] = False
            seen_targets[env].add((m.account, m.region))
        elif (m.account, m.region) not in seen_targets[env]:
            seconds += a.assume_role_latency + a.cpu(fleet.clients_cpu["new"])
            seen_targets[env].add((m.account, m.region))
        else:
            seconds += a.cpu(fleet.clients_cpu["seen"])
        end = start + seconds
        group_free[group] = end
        group_work[group] += seconds
        work += seconds
        longest = max(longest, (seconds, f"{m.account}/{m.region}/{m.cluster} ({m.namespaces} namespaces)"))
        if end > last["end"]:
            last = {"end": end, "start": start, "seconds": seconds, "message": m,
                    "waited_for": _why_then(start, free, available[m.index])}
        ends.append((end, m))
        heapq.heappush(envs, (end, env))
        remaining -= 1
    finalize = a.cpu(fleet.finalize_cpu) + sum(count * a.s3_latency.get(op, 0.030)
                                               for op, count in fleet.finalize_s3.items())
    group, chain = max(((g, w) for g, w in group_work.items()), key=lambda gw: gw[1])
    return Schedule(wall=last["end"] + finalize, scheduled=ready_at, sends_done=sends_done, work=work,
                    longest_message=longest, longest_group=(chain, group), last=last, finalize=finalize,
                    cold_starts=sum(not c for c in cold), ends=ends)


def _why_then(start: float, free: float, available: float) -> str:
    """What the last message waited for before it started."""
    if start == available and available >= free:
        return "its message being sent"
    if start == free:
        return "a free environment"
    return "the message before it in its FIFO group"


# -- progress counting under contention --------------------------------------------------------------------------
@dataclass
class Contention:
    counts: int
    attempts_mean: float
    attempts_max: int
    failed: int  # counts that ran out of attempts: their clusters would be delivered again and scanned again


def replay_counts(ends: list[tuple[float, str]], objects: int, attempts: int, backoff: Any, a: Assumptions,
                  seed: int = 1) -> Contention:
    """Optimistic conditional writes: each count GETs its object, then PUTs over the ETag it read; the PUT fails
    when another PUT to that object landed after the GET. `ends`: (when a message counts, its cluster name);
    `backoff(attempt, rng)`: seconds to wait after a conflict."""
    rng = random.Random(seed)
    get, put = a.s3_latency["GetObject"], a.s3_latency["PutObject"]
    # Events: (time, seq, kind, count id, attempt). A GET at t reads the version current at t + get; the PUT
    # lands at t + get + put and wins when no other PUT to the object landed in between.
    events: list[tuple[float, int, str, int, int]] = []
    seq = 0
    key_of = [shard_of(name, objects) for _, name in ends]
    for i, (t, _) in enumerate(ends):
        events.append((t, seq, "get", i, 1))
        seq += 1
    heapq.heapify(events)
    version = [0] * objects
    read: dict[int, int] = {}
    tries = [0] * len(ends)
    failed = 0
    while events:
        t, _, kind, i, attempt = heapq.heappop(events)
        tries[i] = attempt
        if kind == "get":
            seq += 1
            heapq.heappush(events, (t + get, seq, "read", i, attempt))
        elif kind == "read":
            read[i] = version[key_of[i]]
            seq += 1
            heapq.heappush(events, (t + put, seq, "put", i, attempt))
        elif version[key_of[i]] == read[i]:
            version[key_of[i]] += 1
        elif attempt < attempts:
            seq += 1
            heapq.heappush(events, (t + backoff(attempt - 1, rng), seq, "get", i, attempt + 1))
        else:
            failed += 1
    return Contention(len(ends), statistics.fmean(tries) if tries else 0.0, max(tries, default=0), failed)


def old_backoff(_: int, rng: random.Random) -> float:
    return rng.uniform(0.05, 0.25)  # the single counter's: 20 attempts, 50-250 ms apart


def sharded_backoff(first: float, longest: float) -> Any:
    return lambda attempt, rng: rng.uniform(0, min(longest, first * 2 ** attempt))
