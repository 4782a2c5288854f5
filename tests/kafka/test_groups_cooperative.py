"""The consumer-group churn test with librdkafka's cooperative-sticky assignor (incremental
rebalancing): members keep consuming and committing while they rebalance, and the member
that gives partitions away commits them synchronously in its revoke callback. No record may
be lost or processed twice, and the committed offsets end at the partitions' ends.

What it took (2026-12-07, broker debug log of a failing run): a commit from the poll loop
stamped with the generation the member's own JoinGroup had just replaced got
ILLEGAL_GENERATION (as it does from Kafka) and the test treated it as fatal; the member then
closed while it led the rebalance, and its revoke-callback commit was held for a SyncGroup
that member was never going to send, until its session expired (UNKNOWN_MEMBER_ID). Now the
member keeps such poll-loop offsets for its next commit (as Kafka clients must), and the
coordinator holds only commits that a member pipelines behind its own SyncGroup
(`Coordinator::commit_waits_for_sync`)."""

from __future__ import annotations

import pytest

from test_groups import run_churn


@pytest.mark.timeout(300)
def test_three_members_churn_cooperative_sticky(bootstrap, topic, uniq):
    run_churn(bootstrap, topic, uniq, "cooperative-sticky")
