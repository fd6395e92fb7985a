"""The deployment model of bench/fleet_model.py: its scheduling rules and its replay of progress counts (pure
logic, no benchmark run)."""
from __future__ import annotations

import pytest

from bench.fleet_model import (Assumptions, Fleet, Message, message_seconds, old_backoff, replay_counts,
                               sharded_backoff, simulate)

QUIET = Assumptions(cold_start=0.0, cold_import_here=0.0, message_overhead=0.0, assume_role_latency=0.0,
                    aws_call_latency=0.0, sqs_send_latency=0.0,
                    s3_latency={"GetObject": 0.0, "PutObject": 0.0, "ListObjectsV2": 0.0})  # Security Hub's only


def message(index: int, group: str, hub_calls: int = 0, cpu: float = 0.0) -> Message:
    return Message(index=index, group=group, account=group.split("/")[0], region="eu-west-1", cluster=f"c{index}",
                   namespaces=10, cpu=cpu, hub_cpu=0.0, s3_requests={}, kube_requests=0, kube_latency=0.0,
                   hub_calls=hub_calls)


def fleet(messages: list[Message]) -> Fleet:
    return Fleet(messages=messages, accounts=1, regions=1, account_regions=1, scheduled_cpu=0.0, progress_objects=0,
                 clients_cpu={"first": 0.0, "new": 0.0, "seen": 0.0}, context_cpu=0.0, finalize_cpu=0.0, finalize_s3={})


def test_security_hub_calls_are_spaced_by_the_workers_share_of_the_accounts_rate():
    # 2 workers per account and Region at 10 calls/s: one call every 0.2 s, the first at once.
    assert message_seconds(message(0, "a/0", hub_calls=11), QUIET) == pytest.approx(10 * 0.2 + QUIET.hub_latency)


def test_messages_of_one_fifo_group_run_one_after_another_whatever_the_workers():
    heavy = [message(i, "a/0", hub_calls=6) for i in range(3)]  # 1.115 s each
    alone = simulate(fleet(heavy), workers=10, a=QUIET)
    spread = simulate(fleet([message(i, f"a/{i}", hub_calls=6) for i in range(3)]), workers=10, a=QUIET)

    assert alone.wall == pytest.approx(3 * message_seconds(heavy[0], QUIET))
    assert spread.wall == pytest.approx(message_seconds(heavy[0], QUIET))


def test_workers_bound_how_many_groups_run_at_once():
    messages = [message(i, f"a/{i}", cpu=QUIET.vcpu) for i in range(4)]  # 1 s each on Lambda's CPU share

    assert simulate(fleet(messages), workers=2, a=QUIET).wall == pytest.approx(2.0)
    assert simulate(fleet(messages), workers=4, a=QUIET).wall == pytest.approx(1.0)


def test_one_counter_runs_out_of_attempts_where_shards_do_not():
    # 2,000 counts arriving 40 a second: more than one object's GET + PUT (60 ms) can take one after another.
    ends = [(i / 40, f"a/eu-west-1/c{i}") for i in range(2000)]

    one = replay_counts(ends, 1, 20, old_backoff, Assumptions())
    shards = replay_counts(ends, 40, 20, sharded_backoff(0.05, 2.0), Assumptions())

    assert one.failed > 0
    assert shards.failed == 0 and shards.attempts_mean < 1.5
