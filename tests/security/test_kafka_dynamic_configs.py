"""Dynamic broker configs (IncrementalAlterConfigs / AlterConfigs / DescribeConfigs on a
BROKER resource) need a user who may alter the cluster: an administrator passes, others
get CLUSTER_AUTHORIZATION_FAILED (confluent-kafka over SASL SCRAM)."""

from __future__ import annotations

import pytest
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource

import ksec

pytestmark = pytest.mark.timeout(120)


def set_broker_config(b, user, pw):
    a = ksec.admin(ksec.conf(b.kafka_bootstrap, user, pw, "SCRAM-SHA-256"))
    res = ConfigResource(ConfigResource.Type.BROKER, "0", incremental_configs=[
        ConfigEntry("background.threads", "9", incremental_operation=AlterConfigOpType.SET)])
    try:
        a.incremental_alter_configs([res], request_timeout=ksec.TIMEOUT)[res].result(ksec.TIMEOUT)
        return None
    except KafkaException as e:
        return e.args[0].code()


def describe_broker(b, user, pw):
    a = ksec.admin(ksec.conf(b.kafka_bootstrap, user, pw, "SCRAM-SHA-256"))
    res = ConfigResource(ConfigResource.Type.BROKER, "0")
    try:
        out = a.describe_configs([res], request_timeout=ksec.TIMEOUT)[res].result(ksec.TIMEOUT)
        return {k: v.value for k, v in out.items()}
    except KafkaException as e:
        return e.args[0].code()


def test_only_administrators_alter_broker_configs(admin_and_plain):
    assert set_broker_config(admin_and_plain, "plain", "plain-pw") == KafkaError.CLUSTER_AUTHORIZATION_FAILED
    assert describe_broker(admin_and_plain, "plain", "plain-pw") == KafkaError.CLUSTER_AUTHORIZATION_FAILED
    assert set_broker_config(admin_and_plain, "admin", "admin-pw") is None
    assert describe_broker(admin_and_plain, "admin", "admin-pw")["background.threads"] == "9"
