"""Prometheus metrics as rabbitmq_prometheus and kafka_exporter serve them, read with
prometheus_client's parser from both the Prometheus port (no auth) and the management
port, moved by real clients (pika, kafka-python)."""

from __future__ import annotations

import time

import pika
import requests
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from conftest import Scrape, scrape, wait_until


def _ports(broker):
    return [broker.prometheus_url, broker.http_url]


def test_every_endpoint_parses_on_both_ports_without_auth(broker):
    assert broker.ports["prometheus"] != broker.ports["http"]
    for base in _ports(broker):
        for path, endpoint in [("/metrics", "aggregated"), ("/metrics/per-object", "per-object"),
                               ("/metrics/detailed", "detailed")]:
            s = scrape(base, path)  # no credentials anywhere
            ident = s.samples("rabbitmq_identity_info")
            assert len(ident) == 1 and ident[0].value == 1
            labels = ident[0].labels
            assert labels["rabbitmq_node"].startswith("ferrymq@")
            assert labels["rabbitmq_cluster"] == labels["rabbitmq_node"]
            assert labels["rabbitmq_cluster_permanent_id"].startswith("ferrymq-cluster-id-")
            assert labels["rabbitmq_endpoint"] == endpoint
    s = scrape(broker.prometheus_url)
    assert s.families["rabbitmq_identity_info"].type == "unknown"  # untyped
    build = s.samples("rabbitmq_build_info")[0]
    assert build.labels["rabbitmq_version"] and build.labels["product_name"] == "FerryMQ"
    for name, kind in [("rabbitmq_queues", "gauge"), ("rabbitmq_connections", "gauge"),
                       ("rabbitmq_process_resident_memory_bytes", "gauge"),
                       ("rabbitmq_global_messages_received", "counter"),
                       ("rabbitmq_queue_messages_ready", "gauge")]:
        assert s.families[name].type == kind, name
    assert s.families["rabbitmq_queues"].documentation == "Queues available"
    assert s.value("rabbitmq_process_resident_memory_bytes") > 1_000_000
    assert s.value("rabbitmq_resident_memory_limit_bytes") > s.value(
        "rabbitmq_process_resident_memory_bytes")
    assert s.value("rabbitmq_process_open_fds") > 3
    assert s.value("rabbitmq_process_max_fds") >= s.value("rabbitmq_process_open_fds")
    assert s.value("rabbitmq_alarms_memory_used_watermark") == 0
    assert s.value("rabbitmq_alarms_free_disk_space_watermark") == 0
    assert s.value("rabbitmq_disk_space_available_bytes") > 0
    assert s.value("rabbitmq_erlang_uptime_seconds") > 0
    # The permanent id survives a restart (it lives in the data directory).
    first = s.samples("rabbitmq_identity_info")[0].labels["rabbitmq_cluster_permanent_id"]
    broker.stop()
    broker.start()
    again = scrape(broker.prometheus_url).samples("rabbitmq_identity_info")[0]
    assert again.labels["rabbitmq_cluster_permanent_id"] == first
    # Other paths on the metrics port are 404s; the API is not served there.
    assert requests.get(broker.prometheus_url + "/api/overview", timeout=5).status_code == 404


def test_queue_and_global_numbers_follow_publishes_and_consumes(broker, amqp):
    conn = amqp()
    ch = conn.channel()
    ch.confirm_delivery()
    ch.queue_declare("jobs", durable=True)
    ch.queue_declare("other")
    before = scrape(broker.prometheus_url)
    assert before.value("rabbitmq_queues") == 2
    assert before.value("rabbitmq_queue_messages_ready") == 0
    received0 = before.value("rabbitmq_global_messages_received_total", protocol="amqp091")
    for i in range(5):
        ch.basic_publish("", "jobs", b"job-%d" % i,
                         pika.BasicProperties(delivery_mode=2))
    ch.basic_publish("", "no-such-queue", b"lost")
    agg = scrape(broker.prometheus_url)
    assert agg.value("rabbitmq_queue_messages_ready") == 5
    assert agg.value("rabbitmq_queue_messages") == 5
    assert agg.value("rabbitmq_global_messages_received_total", protocol="amqp091") == received0 + 6
    assert agg.value("rabbitmq_global_messages_confirmed_total", protocol="amqp091") == 6
    assert agg.value("rabbitmq_global_messages_unroutable_dropped_total", protocol="amqp091") == 1
    assert agg.value("rabbitmq_global_messages_routed_total", protocol="amqp091") == 5
    assert agg.value("rabbitmq_connections") == 1
    assert agg.value("rabbitmq_channels") == 1
    # Consume two with manual acks, leave one unacked.
    got = []
    for _ in range(3):
        m, _, body = ch.basic_get("jobs", auto_ack=False)
        got.append(m.delivery_tag)
    ch.basic_ack(got[0])
    ch.basic_ack(got[1])
    ch.basic_get("jobs", auto_ack=True)
    ch.basic_get("other", auto_ack=False)  # empty
    conn.process_data_events(0)
    per = wait_until(lambda: (s := scrape(broker.prometheus_url, "/metrics/per-object")).value(
        "rabbitmq_queue_messages_acked_total", vhost="/", queue="jobs") == 2 and s,
        what="acks counted")
    q = {"vhost": "/", "queue": "jobs"}
    assert per.value("rabbitmq_queue_messages_ready", **q) == 1
    assert per.value("rabbitmq_queue_messages_unacked", **q) == 1
    assert per.value("rabbitmq_queue_messages", **q) == 2
    assert per.value("rabbitmq_queue_messages_ready", vhost="/", queue="other") == 0
    assert per.value("rabbitmq_queue_get_ack_total", **q) == 3
    assert per.value("rabbitmq_queue_get_total", **q) == 1
    assert per.value("rabbitmq_queue_messages_published_total", **q) == 5
    assert per.value("rabbitmq_queue_get_empty_total", vhost="/", queue="other") == 1
    assert per.value("rabbitmq_queue_consumers", **q) == 0
    g = {"protocol": "amqp091", "queue_type": "rabbit_classic_queue"}
    assert per.value("rabbitmq_global_messages_delivered_get_manual_ack_total", **g) == 3
    assert per.value("rabbitmq_global_messages_delivered_get_auto_ack_total", **g) == 1
    assert per.value("rabbitmq_global_messages_delivered_total", **g) == 4
    assert per.value("rabbitmq_global_messages_acknowledged_total", **g) == 2
    assert per.value("rabbitmq_global_messages_get_empty_total", **g) == 1
    # Channel samples carry the channel's name (as the API names it).
    chan = [s for s in per.samples("rabbitmq_channel_messages_published_total")]
    assert len(chan) == 1 and chan[0].labels["channel"].endswith("(1)") and chan[0].value == 6
    assert per.value("rabbitmq_channel_messages_unacked", channel=chan[0].labels["channel"]) == 1
    assert per.value("rabbitmq_channel_get_ack_total", channel=chan[0].labels["channel"]) == 3
    assert per.value("rabbitmq_channel_messages_unroutable_dropped_total",
                     channel=chan[0].labels["channel"]) == 1
    # Connections are labelled with their name too, and count bytes.
    conn_samples = per.samples("rabbitmq_connection_incoming_bytes_total")
    assert len(conn_samples) == 1 and conn_samples[0].value > 100
    # Consumers show on their queue.
    ch.basic_consume("other", lambda *a: None)
    s = scrape(broker.http_url, "/metrics/per-object")
    assert s.value("rabbitmq_queue_consumers", vhost="/", queue="other") == 1
    assert s.value("rabbitmq_consumers") == 1
    assert s.value("rabbitmq_global_consumers", protocol="amqp091") == 1
    conn.close()
    s = scrape(broker.prometheus_url)
    assert s.value("rabbitmq_connections") == 0
    assert s.value("rabbitmq_connections_opened_total") >= 1
    assert s.value("rabbitmq_connections_closed_total") >= 1
    assert s.value("rabbitmq_queues_declared_total") >= 2


def test_exchange_publish_in_and_out(broker, amqp):
    ch = amqp().channel()
    ch.confirm_delivery()
    ch.exchange_declare("fan", "fanout")
    for q in ("a", "b"):
        ch.queue_declare(q)
        ch.queue_bind(q, "fan")
    ch.exchange_declare("nowhere", "direct")
    for _ in range(3):
        ch.basic_publish("fan", "", b"x")
    ch.basic_publish("nowhere", "k", b"y")
    ch.basic_publish("", "a", b"z")
    s = scrape(broker.prometheus_url, "/metrics/per-object")
    fan = {"vhost": "/", "exchange": "fan"}
    assert s.value("rabbitmq_exchange_messages_published_in_total", **fan) == 3
    assert s.value("rabbitmq_exchange_messages_published_out_total", **fan) == 6
    nowhere = {"vhost": "/", "exchange": "nowhere"}
    assert s.value("rabbitmq_exchange_messages_published_in_total", **nowhere) == 1
    assert s.value("rabbitmq_exchange_messages_published_out_total", **nowhere) == 0
    assert s.value("rabbitmq_exchange_messages_published_in_total", vhost="/", exchange="") == 1
    assert s.value("rabbitmq_exchange_messages_published_in_total",
                   vhost="/", exchange="amq.topic") == 0
    # The same numbers in the management API's message_stats.
    api = requests.get(broker.http_url + "/api/exchanges/%2F/fan", auth=("guest", "guest"),
                       timeout=5).json()
    assert api["message_stats"]["publish_in"] == 3
    assert api["message_stats"]["publish_out"] == 6
    # The API's own publish counts too.
    r = requests.post(broker.http_url + "/api/exchanges/%2F/fan/publish", auth=("guest", "guest"),
                      json={"routing_key": "", "properties": {}, "payload": "p",
                            "payload_encoding": "string"}, timeout=5)
    assert r.json() == {"routed": True}
    s = scrape(broker.prometheus_url, "/metrics/per-object")
    assert s.value("rabbitmq_exchange_messages_published_in_total", **fan) == 4
    assert s.value("rabbitmq_exchange_messages_published_out_total", **fan) == 8
    # Aggregated: one unlabelled sum.
    agg = scrape(broker.prometheus_url)
    assert agg.value("rabbitmq_exchange_messages_published_in_total") == 6
    assert agg.samples("rabbitmq_exchange_messages_published_in_total")[0].labels == {}
    # A deleted and redeclared exchange starts from zero.
    ch.exchange_delete("nowhere")
    ch.exchange_declare("nowhere", "direct")
    s = scrape(broker.prometheus_url, "/metrics/per-object")
    assert s.value("rabbitmq_exchange_messages_published_in_total", **nowhere) == 0


def test_per_object_labels_escape_odd_names(broker, amqp):
    ch = amqp().channel()
    odd = 'a "quoted"\\name/é'
    ch.queue_declare(odd)
    ch.basic_publish("", odd, b"1")
    s = scrape(broker.prometheus_url, "/metrics/per-object")
    assert s.value("rabbitmq_queue_messages_ready", vhost="/", queue=odd) == 1


def test_vhosts_in_labels_and_detailed_filters(broker, amqp):
    api = ("guest", "guest")
    assert requests.put(broker.http_url + "/api/vhosts/tenant", auth=api, timeout=5).status_code == 201
    assert requests.put(broker.http_url + "/api/permissions/tenant/guest", auth=api, timeout=5,
                        json={"configure": ".*", "write": ".*", "read": ".*"}).status_code == 201
    assert requests.put(broker.http_url + "/api/queues/tenant/tq", auth=api, timeout=5,
                        json={}).status_code == 201
    assert requests.put(broker.http_url + "/api/queues/%2F/rq", auth=api, timeout=5,
                        json={}).status_code == 201
    per = scrape(broker.prometheus_url, "/metrics/per-object")
    assert per.has("rabbitmq_queue_messages", vhost="tenant", queue="tq")
    assert per.has("rabbitmq_queue_messages", vhost="/", queue="rq")
    d = scrape(broker.prometheus_url, "/metrics/detailed",
               family=["queue_coarse_metrics", "queue_consumer_count"], vhost="tenant")
    names = {s.name for f in d.families.values() for s in f.samples}
    assert names == {"rabbitmq_identity_info", "rabbitmq_detailed_queue_messages_ready",
                     "rabbitmq_detailed_queue_messages_unacked", "rabbitmq_detailed_queue_messages",
                     "rabbitmq_detailed_queue_consumers"}
    assert d.value("rabbitmq_detailed_queue_messages", vhost="tenant", queue="tq") == 0
    assert not d.has("rabbitmq_detailed_queue_messages", queue="rq")
    # No family asked: identity only.
    d = scrape(broker.prometheus_url, "/metrics/detailed")
    assert set(d.families) == {"rabbitmq_identity_info"}


def test_kafka_metrics_in_kafka_exporter_names(kbroker):
    requests.put(kbroker.http_url + "/api/kafka/topics/%2F/orders", auth=("guest", "guest"),
                 json={"partitions": 2}, timeout=5).raise_for_status()
    p = KafkaProducer(bootstrap_servers=kbroker.kafka_bootstrap)
    for i in range(10):
        p.send("orders", b"o%d" % i, partition=0 if i < 7 else 1)
    p.flush()
    p.close()
    s = scrape(kbroker.prometheus_url)
    assert s.value("kafka_brokers") == 1
    assert s.value("kafka_topic_partitions", topic="orders") == 2
    t0 = {"topic": "orders", "partition": "0"}
    t1 = {"topic": "orders", "partition": "1"}
    assert s.value("kafka_topic_partition_current_offset", **t0) == 7
    assert s.value("kafka_topic_partition_current_offset", **t1) == 3
    assert s.value("kafka_topic_partition_oldest_offset", **t0) == 0
    assert s.value("kafka_topic_partition_leader", **t0) == 0
    assert s.value("kafka_topic_partition_replicas", **t0) == 1
    assert s.value("kafka_topic_partition_in_sync_replica", **t0) == 1
    assert s.samples("kafka_topic_partitions")[0].labels["vhost"] == "/"
    assert not s.samples("kafka_consumergroup_lag")
    c = KafkaConsumer(bootstrap_servers=kbroker.kafka_bootstrap, group_id="billing",
                      enable_auto_commit=False, auto_offset_reset="earliest")
    c.subscribe(["orders"])
    seen = 0
    deadline = time.monotonic() + 20
    while seen < 10 and time.monotonic() < deadline:
        for recs in c.poll(timeout_ms=500).values():
            seen += len(recs)
    assert seen == 10
    c.commit({TopicPartition("orders", 0): _meta(4), TopicPartition("orders", 1): _meta(3)})
    s = wait_until(lambda: (x := scrape(kbroker.prometheus_url, "/metrics/per-object")).has(
        "kafka_consumergroup_lag", consumergroup="billing") and x, what="the group's lag")
    g0 = {"consumergroup": "billing", "topic": "orders", "partition": "0"}
    g1 = {"consumergroup": "billing", "topic": "orders", "partition": "1"}
    assert s.value("kafka_consumergroup_current_offset", **g0) == 4
    assert s.value("kafka_consumergroup_lag", **g0) == 3
    assert s.value("kafka_consumergroup_lag", **g1) == 0
    assert s.value("kafka_consumergroup_lag_sum", consumergroup="billing", topic="orders") == 3
    assert s.value("kafka_consumergroup_current_offset_sum",
                   consumergroup="billing", topic="orders") == 7
    assert s.value("kafka_consumergroup_members", consumergroup="billing") == 1
    # More records raise the lag exactly; the management port serves the same.
    p = KafkaProducer(bootstrap_servers=kbroker.kafka_bootstrap)
    for i in range(5):
        p.send("orders", b"late", partition=1)
    p.flush()
    p.close()
    # (The partition publishes its high watermark right after answering the produce: a
    # scrape in between can see the old one.)
    s = wait_until(lambda: (x := scrape(kbroker.http_url)).value(
        "kafka_consumergroup_lag", **g1) == 5 and x, what="the new lag")
    assert s.value("kafka_consumergroup_lag", **g1) == 5
    assert s.value("kafka_topic_partition_current_offset", **t1) == 8
    c.close()
    s = wait_until(lambda: (x := scrape(kbroker.prometheus_url)).value(
        "kafka_consumergroup_members", consumergroup="billing") == 0 and x,
        what="the group to empty")
    assert s.value("kafka_consumergroup_lag_sum", consumergroup="billing", topic="orders") == 8


def _meta(offset):
    from kafka.structs import OffsetAndMetadata
    try:
        return OffsetAndMetadata(offset, "", -1)
    except TypeError:
        return OffsetAndMetadata(offset, "")


def test_scrapes_do_not_disturb_publishing(broker, amqp):
    """A scrape running while a publisher works: every confirm arrives, counts exact."""
    import threading
    ch = amqp().channel()
    ch.confirm_delivery()
    for i in range(200):
        ch.queue_declare("many-%d" % i)
    stop = threading.Event()
    errors = []

    def scraper():
        while not stop.is_set():
            try:
                Scrape(requests.get(broker.prometheus_url + "/metrics/per-object",
                                    timeout=10).text)
            except Exception as e:  # pragma: no cover - reported below
                errors.append(e)

    t = threading.Thread(target=scraper)
    t.start()
    try:
        for i in range(300):
            ch.basic_publish("", "many-%d" % (i % 200), b"m")
    finally:
        stop.set()
        t.join()
    assert not errors
    s = scrape(broker.prometheus_url)
    assert s.value("rabbitmq_queue_messages_ready") == 300
    assert s.value("rabbitmq_queues") == 200


def test_fsyncs_are_counted_as_rabbitmq_io_sync(broker, amqp):
    s = scrape(broker.prometheus_url)
    assert s.families["rabbitmq_io_sync_ops"].type == "counter"
    assert s.families["rabbitmq_io_sync_time_seconds"].type == "counter"
    assert s.families["rabbitmq_io_sync_ops"].documentation == "Total number of I/O sync operations"
    ops0 = s.value("rabbitmq_io_sync_ops_total")
    secs0 = s.value("rabbitmq_io_sync_time_seconds_total")
    conn = amqp()
    ch = conn.channel()
    ch.confirm_delivery()
    ch.queue_declare("synced", durable=True)
    # Each confirmed persistent message waits for an fsync of the queue's log (default
    # policy `always`), so five one-by-one publishes make at least five more.
    for i in range(5):
        ch.basic_publish("", "synced", b"m%d" % i, pika.BasicProperties(delivery_mode=2))
    conn.close()
    after = scrape(broker.prometheus_url)
    assert after.value("rabbitmq_io_sync_ops_total") >= ops0 + 5
    assert after.value("rabbitmq_io_sync_time_seconds_total") > secs0
    # The management port serves the same numbers.
    assert scrape(broker.http_url).value("rabbitmq_io_sync_ops_total") >= ops0 + 5
