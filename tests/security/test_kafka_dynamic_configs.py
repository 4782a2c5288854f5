"""Dynamic broker configs (IncrementalAlterConfigs / AlterConfigs / DescribeConfigs on a
BROKER resource) need a user who may alter the cluster: an administrator, or a user the
cluster's ACLs allow ALTER_CONFIGS / DESCRIBE_CONFIGS, as Kafka checks them; others get
CLUSTER_AUTHORIZATION_FAILED (confluent-kafka over SASL SCRAM)."""

from __future__ import annotations

import pytest
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import (AclBinding, AclOperation, AclPermissionType,
                                  AlterConfigOpType, ConfigEntry, ConfigResource,
                                  ResourcePatternType, ResourceType)

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


def test_cluster_acls_let_a_plain_user_describe_then_alter_broker_configs(admin_and_plain):
    b = admin_and_plain
    admin = ksec.admin(ksec.conf(b.kafka_bootstrap, "admin", "admin-pw", "SCRAM-SHA-256"))

    def allow(op):
        # confluent-kafka calls the CLUSTER resource type BROKER.
        binding = AclBinding(ResourceType.BROKER, "kafka-cluster", ResourcePatternType.LITERAL,
                             "User:plain", "*", op, AclPermissionType.ALLOW)
        for f in admin.create_acls([binding], request_timeout=ksec.TIMEOUT).values():
            f.result(ksec.TIMEOUT)

    assert describe_broker(b, "plain", "plain-pw") == KafkaError.CLUSTER_AUTHORIZATION_FAILED
    allow(AclOperation.DESCRIBE_CONFIGS)
    assert "background.threads" in describe_broker(b, "plain", "plain-pw")
    # Describing is not altering.
    assert set_broker_config(b, "plain", "plain-pw") == KafkaError.CLUSTER_AUTHORIZATION_FAILED
    allow(AclOperation.ALTER_CONFIGS)
    assert set_broker_config(b, "plain", "plain-pw") is None
    assert describe_broker(b, "plain", "plain-pw")["background.threads"] == "9"
