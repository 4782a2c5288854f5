"""Issue 12 admin parity, with confluent-kafka's AdminClient, kafka-python's
KafkaAdminClient and kcat: CreateTopics with replica assignments / replication factors
on one node and validate_only, CreatePartitions with assignments, legacy AlterConfigs
(key 33) next to IncrementalAlterConfigs, DescribeLogDirs, DescribeProducers,
ElectLeaders, ListOffsets -3 (max timestamp), OffsetForLeaderEpoch."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest
from confluent_kafka import (ElectionType, KafkaError, KafkaException, TopicCollection,
                             TopicPartition)
from confluent_kafka.admin import (AlterConfigOpType, ConfigEntry, ConfigResource,
                                   NewPartitions, NewTopic, OffsetSpec)

import kafka_helpers as kh

T = kh.CLIENT_TIMEOUT_S
NODE = 0  # FerryMQ's node id


def err_code(exc_info) -> int:
    e = exc_info.value
    return e.args[0].code() if isinstance(e, KafkaException) else e.code()


def kp_admin(bootstrap):
    from kafka.admin import KafkaAdminClient
    return KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=int(T * 1000))


def configs_with_sources(bootstrap, name):
    a = kh.admin(bootstrap)
    res = ConfigResource(ConfigResource.Type.TOPIC, name)
    return {k: (v.value, v.source) for k, v in a.describe_configs([res])[res].result(T).items()}


# ------------------------------------------------------------------ CreateTopics

def test_create_with_replica_assignment_naming_this_node(bootstrap, uniq):
    a = kh.admin(bootstrap)
    name = uniq("asg")
    a.create_topics([NewTopic(name, num_partitions=len([[NODE], [NODE], [NODE]]), replica_assignment=[[NODE], [NODE], [NODE]])])[name].result(T)
    kh.wait_for(lambda: kh.partitions_of(bootstrap, name) == 3, what="3 partitions")
    desc = a.describe_topics(TopicCollection([name]))[name].result(T)
    # Served as one replica: this node leads, replicates and is in sync everywhere.
    for p in desc.partitions:
        assert p.leader.id == NODE
        assert [r.id for r in p.replicas] == [NODE]
        assert [r.id for r in p.isr] == [NODE]
    acked = kh.produce(bootstrap, name, [b"x"], partition=2)
    assert acked[0].partition == 2


def test_any_replication_factor_is_accepted_and_served_as_one(bootstrap, uniq):
    a = kh.admin(bootstrap)
    name = uniq("rf3")
    a.create_topics([NewTopic(name, num_partitions=2, replication_factor=3)])[name].result(T)
    kh.wait_for(lambda: kh.partitions_of(bootstrap, name) == 2, what="2 partitions")
    desc = a.describe_topics(TopicCollection([name]))[name].result(T)
    assert all([r.id for r in p.replicas] == [NODE] for p in desc.partitions)
    # replication factor 0 is refused as Kafka does.
    bad = uniq("rf0")
    with pytest.raises(KafkaException) as ei:
        a.create_topics([NewTopic(bad, num_partitions=1, replication_factor=0)])[bad].result(T)
    assert err_code(ei) == KafkaError.INVALID_REPLICATION_FACTOR


@pytest.mark.parametrize("assignment", [
    [[7]],               # names only an unknown broker
    [[NODE], [NODE, 7]],  # inconsistent replica counts
    [[NODE, NODE]],      # a broker twice
])
def test_bad_assignments_get_invalid_replica_assignment(bootstrap, uniq, assignment):
    a = kh.admin(bootstrap)
    name = uniq("badasg")
    with pytest.raises(KafkaException) as ei:
        a.create_topics([NewTopic(name, num_partitions=len(assignment), replica_assignment=assignment)])[name].result(T)
    assert err_code(ei) == KafkaError.INVALID_REPLICA_ASSIGNMENT
    assert kh.partitions_of(bootstrap, name) == 0


def test_validate_only_creates_nothing(bootstrap, uniq):
    a = kh.admin(bootstrap)
    name = uniq("vo")
    a.create_topics([NewTopic(name, num_partitions=len([[NODE], [NODE]]), replica_assignment=[[NODE], [NODE]])],
                    validate_only=True)[name].result(T)
    assert kh.partitions_of(bootstrap, name) == 0
    with pytest.raises(KafkaException) as ei:
        a.create_topics([NewTopic(name, num_partitions=len([[9]]), replica_assignment=[[9]])],
                        validate_only=True)[name].result(T)
    assert err_code(ei) == KafkaError.INVALID_REPLICA_ASSIGNMENT
    assert kh.partitions_of(bootstrap, name) == 0


def test_create_partitions_with_assignments(bootstrap, topic):
    t = topic(partitions=1)
    a = kh.admin(bootstrap)
    with pytest.raises(KafkaException) as ei:
        a.create_partitions([NewPartitions(t, 3, replica_assignment=[[NODE]])])[t].result(T)
    assert err_code(ei) == KafkaError.INVALID_REPLICA_ASSIGNMENT  # 2 new, 1 list
    with pytest.raises(KafkaException) as ei:
        a.create_partitions([NewPartitions(t, 2, replica_assignment=[[5]])])[t].result(T)
    assert err_code(ei) == KafkaError.INVALID_REPLICA_ASSIGNMENT
    assert kh.partitions_of(bootstrap, t) == 1
    a.create_partitions([NewPartitions(t, 3, replica_assignment=[[NODE], [NODE]])])[t].result(T)
    kh.wait_for(lambda: kh.partitions_of(bootstrap, t) == 3, what="3 partitions")


def test_assignment_survives_a_restart(private_broker, uniq):
    b = private_broker()
    name = uniq("keep")
    a = kh.admin(b.kafka_bootstrap)
    a.create_topics([NewTopic(name, num_partitions=len([[NODE, 4], [4, NODE]]), replica_assignment=[[NODE, 4], [4, NODE]])])[name].result(T)
    meta = next(b.data_dir.rglob("topic.meta")).read_text()
    assert "replication_factor=2\n" in meta and "replicas.0=0,4\n" in meta and "replicas.1=4,0\n" in meta
    b.stop()
    b.start(same_port=True)
    assert kh.partitions_of(b.kafka_bootstrap, name) == 2
    # The stored replication factor governs later partitions.
    a = kh.admin(b.kafka_bootstrap)
    with pytest.raises(KafkaException) as ei:
        a.create_partitions([NewPartitions(name, 3, replica_assignment=[[NODE]])])[name].result(T)
    assert err_code(ei) == KafkaError.INVALID_REPLICA_ASSIGNMENT


# ------------------------------------------------------------------ AlterConfigs (33)

def test_legacy_alter_configs_replaces_the_whole_set(bootstrap, topic):
    t = topic(partitions=1, config={"retention.ms": "3600000", "segment.bytes": "1048576"})
    a = kh.admin(bootstrap)
    res = ConfigResource(ConfigResource.Type.TOPIC, t, set_config={"max.message.bytes": "5000"})
    a.alter_configs([res])[res].result(T)
    cfg = configs_with_sources(bootstrap, t)
    # DYNAMIC_TOPIC_CONFIG (1) for the set one, DEFAULT_CONFIG (5) for the rest: the
    # overrides not given are gone.
    assert cfg["max.message.bytes"] == ("5000", 1)
    assert cfg["retention.ms"] == ("604800000", 5)
    assert cfg["segment.bytes"] == ("1073741824", 5)
    # validate_only changes nothing; a bad value is INVALID_CONFIG.
    res = ConfigResource(ConfigResource.Type.TOPIC, t, set_config={"retention.ms": "1"})
    a.alter_configs([res], validate_only=True)[res].result(T)
    assert configs_with_sources(bootstrap, t)["retention.ms"] == ("604800000", 5)
    res = ConfigResource(ConfigResource.Type.TOPIC, t, set_config={"retention.ms": "soon"})
    with pytest.raises(KafkaException) as ei:
        a.alter_configs([res])[res].result(T)
    assert err_code(ei) == KafkaError.INVALID_CONFIG
    # Behaviour follows: a 6 kB record is now too large.
    with pytest.raises(AssertionError, match="MSG_SIZE_TOO_LARGE|MESSAGE_TOO_LARGE"):
        kh.produce(bootstrap, t, [b"x" * 6000])


def test_kafka_python_legacy_alter_configs(bootstrap, topic):
    from kafka.admin import ConfigResource as KRes
    from kafka.admin import ConfigResourceType
    t = topic(partitions=1, config={"retention.ms": "3600000"})
    a = kp_admin(bootstrap)
    try:
        a.alter_configs([KRes(ConfigResourceType.TOPIC, t, configs={"retention.bytes": "99999"})],
                        incremental=False, raise_on_unknown=False)
    finally:
        a.close()
    cfg = configs_with_sources(bootstrap, t)
    assert cfg["retention.bytes"] == ("99999", 1)
    # kafka-python sends the whole set on AlterConfigs (it re-adds the topic's other
    # modified keys itself, since the broker replaces the set): retention.ms stays.
    assert cfg["retention.ms"] == ("3600000", 1)


def test_kafka3_message_format_version_is_accepted_and_ignored(bootstrap, topic):
    """librdkafka's 0092-mixed_msgver sets `message.format.version=0.10.0.0` half-way
    through producing. Kafka 3.x accepts the (deprecated) name and, with the inter-broker
    protocol at 3.0+, keeps writing v2 batches; FerryMQ does the same: every record is
    still there, before and after the change."""
    t = topic(partitions=1)
    kh.produce(bootstrap, t, [(b"k1", b"before")])
    a = kh.admin(bootstrap)
    res = ConfigResource(ConfigResource.Type.TOPIC, t,
                         set_config={"message.format.version": "0.10.0.0"})
    a.alter_configs([res])[res].result(T)
    cfg = configs_with_sources(bootstrap, t)
    assert cfg["message.format.version"] == ("0.10.0.0", 1)
    assert cfg["message.downconversion.enable"] == ("true", 5)
    kh.produce(bootstrap, t, [(b"k2", b"after")])
    recs = kh.consume_to_end(bootstrap, t)
    assert [r.value for r in recs] == [b"before", b"after"]
    assert [r.key for r in recs] == [b"k1", b"k2"]
    # A value that is no version is INVALID_CONFIG, as in Kafka 3.x.
    res = ConfigResource(ConfigResource.Type.TOPIC, t,
                         set_config={"message.format.version": "latest"})
    with pytest.raises(KafkaException) as ei:
        a.alter_configs([res])[res].result(T)
    assert err_code(ei) == KafkaError.INVALID_CONFIG


def raw_roundtrip(bootstrap: str, msg: bytes) -> bytes:
    """Sends one unframed request over a new plain socket; the framed response (size first)."""
    import socket
    import struct
    host, port = bootstrap.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=T) as sock:
        sock.sendall(struct.pack(">i", len(msg)) + msg)
        buf = b""
        while len(buf) < 4 or len(buf) < 4 + struct.unpack(">i", buf[:4])[0]:
            chunk = sock.recv(65536)
            assert chunk, "connection closed"
            buf += chunk
    return buf


def raw_alter_configs_v0(bootstrap: str, rtype: int, name: str, configs: dict) -> int:
    """AlterConfigs v0 (key 33) on one resource over a plain socket; its error code."""
    import struct

    def st(x: str) -> bytes:
        return struct.pack(">h", len(x.encode())) + x.encode()
    body = struct.pack(">i", 1) + struct.pack(">b", rtype) + st(name)
    body += struct.pack(">i", len(configs)) + b"".join(st(k) + st(v) for k, v in configs.items())
    body += b"\0"
    msg = struct.pack(">hhi", 33, 0, 7) + st("raw") + body
    buf = raw_roundtrip(bootstrap, msg)
    # size, correlation id, throttle, array length, then the first error code.
    corr, _throttle, count, code = struct.unpack(">iiih", buf[4:18])
    assert corr == 7 and count == 1
    return code


def broker_configs(a, name=str(NODE)):
    res = ConfigResource(ConfigResource.Type.BROKER, name)
    return {k: (v.value, v.source) for k, v in a.describe_configs([res])[res].result(T).items()}


def test_dynamic_broker_configs_for_both_alter_apis(private_broker, uniq):
    """Dynamic broker configs as Kafka's DynamicBrokerConfig: per broker ("0") and
    cluster default (""), only dynamic names (others INVALID_REQUEST), described with
    their sources, `message.max.bytes` applied as the topics' default, kept on restart."""
    from confluent_kafka.admin import ConfigSource
    b = private_broker()
    a = kh.admin(b.kafka_bootstrap)
    inc = ConfigResource(ConfigResource.Type.BROKER, str(NODE), incremental_configs=[
        ConfigEntry("sasl.kerberos.min.time.before.relogin", "58000",
                    incremental_operation=AlterConfigOpType.SET),
        ConfigEntry("log.cleanup.policy", "compact",
                    incremental_operation=AlterConfigOpType.APPEND)])
    a.incremental_alter_configs([inc])[inc].result(T)
    cfg = broker_configs(a)
    dyn = ConfigSource.DYNAMIC_BROKER_CONFIG.value
    assert cfg["sasl.kerberos.min.time.before.relogin"] == ("58000", dyn), cfg
    assert cfg["log.cleanup.policy"] == ("delete,compact", dyn), cfg
    assert cfg["background.threads"] == ("10", ConfigSource.DEFAULT_CONFIG.value), cfg
    # A name Kafka does not update dynamically, by either API: INVALID_REQUEST.
    bad = ConfigResource(ConfigResource.Type.BROKER, str(NODE), incremental_configs=[
        ConfigEntry("broker.id", "3", incremental_operation=AlterConfigOpType.SET)])
    with pytest.raises(KafkaException) as ei:
        a.incremental_alter_configs([bad])[bad].result(T)
    assert err_code(ei) == KafkaError.INVALID_REQUEST
    legacy_bad = ConfigResource(ConfigResource.Type.BROKER, str(NODE),
                                set_config={"log.dirs": "/tmp"})
    with pytest.raises(KafkaException) as ei:
        a.alter_configs([legacy_bad])[legacy_bad].result(T)
    assert err_code(ei) == KafkaError.INVALID_REQUEST
    # A bad value: INVALID_CONFIG, nothing changed.
    worse = ConfigResource(ConfigResource.Type.BROKER, str(NODE), incremental_configs=[
        ConfigEntry("background.threads", "0", incremental_operation=AlterConfigOpType.SET)])
    with pytest.raises(KafkaException) as ei:
        a.incremental_alter_configs([worse])[worse].result(T)
    assert err_code(ei) == KafkaError.INVALID_CONFIG
    # Legacy AlterConfigs on the cluster default (""), raw on the wire: confluent-kafka
    # and kafka-python refuse an empty broker name. message.max.bytes becomes the
    # default max.message.bytes of topics without their own.
    assert raw_alter_configs_v0(b.kafka_bootstrap, 4, "", {"message.max.bytes": "2000"}) == 0
    assert broker_configs(a)["message.max.bytes"] == (
        "2000", ConfigSource.DYNAMIC_DEFAULT_BROKER_CONFIG.value)
    t = uniq("mmb")
    kh.create_topic(b.kafka_bootstrap, t, 1)
    assert configs_with_sources(b.kafka_bootstrap, t)["max.message.bytes"] == (
        "2000", ConfigSource.DYNAMIC_DEFAULT_BROKER_CONFIG.value)

    def too_large() -> bool:
        try:
            kh.produce(b.kafka_bootstrap, t, [b"x" * 5000], partition=0)
        except AssertionError as e:
            assert "MSG_SIZE_TOO_LARGE" in str(e), e
            return True
        return False
    assert too_large()
    kh.produce(b.kafka_bootstrap, t, [b"small"], partition=0)
    # A group config, kept across the restart too and applied to the group after it.
    g = uniq("gkeep")
    ginc = ConfigResource(ConfigResource.Type.GROUP, g, incremental_configs=[
        ConfigEntry("consumer.heartbeat.interval.ms", "6000",
                    incremental_operation=AlterConfigOpType.SET)])
    a.incremental_alter_configs([ginc])[ginc].result(T)
    b.stop()
    b.start(same_port=True)
    assert raw_consumer_heartbeat_join(b.kafka_bootstrap, g, t) == (0, 6000)
    a = kh.admin(b.kafka_bootstrap)
    cfg = broker_configs(a)
    assert cfg["sasl.kerberos.min.time.before.relogin"] == ("58000", dyn), cfg
    assert cfg["message.max.bytes"] == ("2000", ConfigSource.DYNAMIC_DEFAULT_BROKER_CONFIG.value)
    assert too_large()
    # DELETE / SUBTRACT return to the defaults; the limit is lifted.
    assert raw_alter_configs_v0(b.kafka_bootstrap, 4, "", {}) == 0
    assert configs_with_sources(b.kafka_bootstrap, t)["max.message.bytes"] == ("1048588", 5)
    kh.wait_for(lambda: not too_large(), what="5000-byte record accepted")


def test_group_configs(bootstrap, uniq):
    """GROUP resources (KIP-848 group configs): described with defaults, set, deleted;
    unknown names and out-of-range values INVALID_CONFIG."""
    from confluent_kafka.admin import ConfigSource
    a = kh.admin(bootstrap)
    g = uniq("gcfg")
    res = ConfigResource(ConfigResource.Type.GROUP, g)

    def described():
        return {k: (v.value, v.source) for k, v in a.describe_configs([res])[res].result(T).items()}
    assert described()["consumer.session.timeout.ms"] == ("45000", ConfigSource.DEFAULT_CONFIG.value)
    inc = ConfigResource(ConfigResource.Type.GROUP, g, incremental_configs=[
        ConfigEntry("consumer.session.timeout.ms", "50000", incremental_operation=AlterConfigOpType.SET)])
    a.incremental_alter_configs([inc])[inc].result(T)
    assert described()["consumer.session.timeout.ms"] == ("50000", ConfigSource.GROUP_CONFIG.value)
    for name, value in [("consumer.session.timeout.ms", "1000"), ("session.timeout.ms", "50000")]:
        bad = ConfigResource(ConfigResource.Type.GROUP, g, incremental_configs=[
            ConfigEntry(name, value, incremental_operation=AlterConfigOpType.SET)])
        with pytest.raises(KafkaException) as ei:
            a.incremental_alter_configs([bad])[bad].result(T)
        assert err_code(ei) == KafkaError.INVALID_CONFIG, name
    dele = ConfigResource(ConfigResource.Type.GROUP, g, incremental_configs=[
        ConfigEntry("consumer.session.timeout.ms", "", incremental_operation=AlterConfigOpType.DELETE)])
    a.incremental_alter_configs([dele])[dele].result(T)
    assert described()["consumer.session.timeout.ms"] == ("45000", ConfigSource.DEFAULT_CONFIG.value)


# ------------------------------------------------------------------ replica-level APIs

def test_describe_log_dirs(bootstrap, topic):
    t = topic(partitions=2)
    kh.produce(bootstrap, t, kh.numbered(50, "ld"), partition=1)
    a = kp_admin(bootstrap)
    try:
        out = a.describe_log_dirs({t: [0, 1]})
    finally:
        a.close()
    # One broker, one log dir; partition 1 holds the 50 records, partition 0 nothing.
    (broker,) = out
    (log_dir,) = broker["log_dirs"]
    assert log_dir["error_code"] == 0 and log_dir["log_dir"].endswith("kafka"), log_dir
    (topic_,) = [x for x in log_dir["topics"] if x["name"] == t]
    sizes = {p["partition_index"]: (p["partition_size"], p["offset_lag"])
             for p in topic_["partitions"]}
    assert sizes[1][0] > 50 * 9 and sizes[1][1] == 0, sizes
    assert sizes[0][0] < sizes[1][0] and sizes[0][1] == 0, sizes


def test_describe_producers(bootstrap, topic):
    from kafka import TopicPartition as KTP
    t = topic(partitions=1)
    kh.produce(bootstrap, t, kh.numbered(10, "idem"), **{"enable.idempotence": True})
    a = kp_admin(bootstrap)
    try:
        out = a.describe_producers([KTP(t, 0)])
    finally:
        a.close()
    state = out[KTP(t, 0)]
    flat = repr(state)
    producers = getattr(state, "active_producers", None)
    assert producers, flat
    p = producers[0]
    assert p.producer_id >= 0 and p.last_sequence == 9, flat
    assert p.current_transaction_start_offset == -1 and p.last_timestamp > 0, flat


def test_elect_leaders_not_needed(bootstrap, topic):
    t = topic(partitions=2)
    a = kh.admin(bootstrap)
    res = a.elect_leaders(ElectionType.PREFERRED,
                          [TopicPartition(t, 0), TopicPartition(t, 1)]).result(T)
    for tp, err in res.items():
        assert err is not None and err.code() == KafkaError.ELECTION_NOT_NEEDED, (tp, err)
    from kafka.errors import UnknownTopicOrPartitionError
    k = kp_admin(bootstrap)
    try:
        k.elect_leaders(0, {t: [0, 1]})  # ELECTION_NOT_NEEDED is not an error to it
        with pytest.raises(UnknownTopicOrPartitionError):
            k.elect_leaders(0, {t: [7]})
    finally:
        k.close()


def test_list_offsets_max_timestamp(bootstrap, topic):
    t = topic(partitions=1)
    p = kh.producer(bootstrap)
    for i, ts in enumerate([1000, 5000, 3000, 5000, 2000]):
        p.produce(t, value=f"v{i}".encode(), partition=0, timestamp=ts)
    assert p.flush(T) == 0
    a = kh.admin(bootstrap)
    tp = TopicPartition(t, 0)
    r = a.list_offsets({tp: OffsetSpec.max_timestamp()})[tp].result(T)
    # KIP-734: the first record carrying the largest timestamp.
    assert (r.offset, r.timestamp) == (1, 5000)
    latest = a.list_offsets({tp: OffsetSpec.latest()})[tp].result(T)
    assert latest.offset == 5


def kp_call(bootstrap, req, version):
    """One request encoded and its response decoded by kafka-python's protocol codec,
    over a plain socket."""
    req.API_VERSION = version
    req.with_header(correlation_id=7, client_id="kadmin-test")
    body = raw_roundtrip(bootstrap, req.encode(version=version, header=True, framed=False))[4:]
    resp_cls = getattr(__import__(type(req).__module__, fromlist=["x"]),
                       type(req).__name__.replace("Request", "Response"))
    return resp_cls.decode(body, version=version, header=True)


def test_offset_for_leader_epoch(bootstrap, topic):
    """Epoch 0 (the only one) ends at the high watermark; a later epoch is undefined; a
    current epoch newer than the leader's is UNKNOWN_LEADER_EPOCH."""
    from kafka.protocol.consumer import OffsetForLeaderEpochRequest as Req
    t = topic(partitions=1)
    kh.produce(bootstrap, t, kh.numbered(7, "e"))
    Topic = Req.OffsetForLeaderTopic
    Part = Topic.OffsetForLeaderPartition
    for ver in (2, 4):
        req = Req(replica_id=-1, topics=[Topic(topic=t, partitions=[
            Part(partition=0, current_leader_epoch=-1, leader_epoch=0),
            Part(partition=0, current_leader_epoch=-1, leader_epoch=4),
            Part(partition=0, current_leader_epoch=3, leader_epoch=0),
        ])])
        parts = kp_call(bootstrap, req, ver).topics[0].partitions
        assert (parts[0].error_code, parts[0].leader_epoch, parts[0].end_offset) == (0, 0, 7)
        assert (parts[1].error_code, parts[1].leader_epoch, parts[1].end_offset) == (0, -1, -1)
        assert parts[2].error_code == 75  # UNKNOWN_LEADER_EPOCH


# ------------------------------------------------------------------ kcat

KCAT = shutil.which("kcat") or shutil.which("kafkacat")


@pytest.mark.skipif(KCAT is None, reason="kcat is not installed")
def test_kcat_sees_an_assigned_topic_with_one_replica(bootstrap, uniq):
    a = kh.admin(bootstrap)
    name = uniq("kcasg")
    a.create_topics([NewTopic(name, num_partitions=len([[NODE, 3], [3, NODE]]), replica_assignment=[[NODE, 3], [3, NODE]])])[name].result(T)
    kh.wait_for(lambda: kh.partitions_of(bootstrap, name) == 2, what="2 partitions")
    r = subprocess.run([KCAT, "-b", bootstrap, "-m", "15", "-L", "-J", "-t", name],
                       capture_output=True, timeout=30)
    assert r.returncode == 0, r.stderr
    md = json.loads(r.stdout)
    (t,) = [x for x in md["topics"] if x["topic"] == name]
    assert [p["replicas"] for p in t["partitions"]] == [[{"id": NODE}], [{"id": NODE}]]


def raw_consumer_heartbeat_join(bootstrap: str, group: str, topic: str) -> tuple[int, int]:
    """A KIP-848 ConsumerGroupHeartbeat v0 join (member epoch 0) on a plain socket:
    (error code, heartbeat_interval_ms) of the answer."""
    import struct

    def uv(n: int) -> bytes:  # unsigned varint
        out = b""
        while True:
            b7 = n & 0x7F
            n >>= 7
            if n:
                out += bytes([b7 | 0x80])
            else:
                return out + bytes([b7])

    def cs(x: str | None) -> bytes:  # compact (nullable) string
        return uv(0) if x is None else uv(len(x.encode()) + 1) + x.encode()
    body = cs(group) + cs("") + struct.pack(">i", 0) + cs(None) + cs(None)
    body += struct.pack(">i", 30000) + uv(2) + cs(topic) + cs(None) + uv(1) + b"\0"
    header = struct.pack(">hhi", 68, 0, 9) + struct.pack(">h", 3) + b"raw" + b"\0"
    msg = header + body
    buf = raw_roundtrip(bootstrap, msg)
    pos = 4
    corr = struct.unpack(">i", buf[pos:pos + 4])[0]
    assert corr == 9
    pos += 5  # correlation id, empty tagged fields
    pos += 4  # throttle
    code = struct.unpack(">h", buf[pos:pos + 2])[0]
    pos += 2

    def skip_cs(p: int) -> int:
        n, shift, v = 0, 0, 0
        while True:
            b = buf[p + n]
            v |= (b & 0x7F) << shift
            n += 1
            shift += 7
            if not b & 0x80:
                break
        return p + n + max(v - 1, 0)
    pos = skip_cs(pos)  # error message
    pos = skip_cs(pos)  # member id
    pos += 4  # member epoch
    return code, struct.unpack(">i", buf[pos:pos + 4])[0]


def test_group_configs_apply_to_kip848_groups(bootstrap, topic, uniq):
    """consumer.heartbeat.interval.ms set on a GROUP resource is what the KIP-848
    coordinator tells that group's members; other groups keep the broker's 5000."""
    t = topic(partitions=1)
    g, other = uniq("g848"), uniq("g848o")
    a = kh.admin(bootstrap)
    inc = ConfigResource(ConfigResource.Type.GROUP, g, incremental_configs=[
        ConfigEntry("consumer.heartbeat.interval.ms", "7000",
                    incremental_operation=AlterConfigOpType.SET)])
    a.incremental_alter_configs([inc])[inc].result(T)
    assert raw_consumer_heartbeat_join(bootstrap, g, t) == (0, 7000)
    assert raw_consumer_heartbeat_join(bootstrap, other, t) == (0, 5000)
