"""PENDING: the churn test with librdkafka's cooperative-sticky assignor (incremental
rebalancing) fails against FerryMQ at main 42a6ec6: the member that gives partitions away
commits its processed offsets synchronously in its revoke callback (before rejoining), and
the coordinator answers REBALANCE_IN_PROGRESS, later ILLEGAL_GENERATION. Kafka accepts a
commit carrying the current generation while the group is preparing a rebalance (it
refuses only in CompletingRebalance, which cannot start before this member rejoins).
Move the parametrization back into test_groups.py once the coordinator accepts it."""

from __future__ import annotations

import pytest

from test_groups import run_churn


@pytest.mark.timeout(300)
def test_three_members_churn_cooperative_sticky(bootstrap, topic, uniq):
    run_churn(bootstrap, topic, uniq, "cooperative-sticky")
