"""`ferrymq admin` (the real binary) against a real broker: every command, tables and
--json, and the exit codes of failures."""

from __future__ import annotations

import json
import subprocess
import time

import pika
import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from conftest import wait_until


def admin(broker, *args, password="guest", user="guest", check=True, stdin=None, port=None):
    cmd = [str(broker.binary), "admin", "--port", str(port or broker.ports["http"]),
           "--host", "127.0.0.1", "--username", user, "--password", password, *args]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=60, input=stdin)
    if check:
        assert r.returncode == 0, f"{args}: exit {r.returncode}\n{r.stdout}\n{r.stderr}"
    return r


def table(out: str) -> list[dict[str, str]]:
    """Parses an aligned table back into rows (columns split at the header's positions)."""
    lines = out.rstrip("\n").split("\n")
    header, rule = lines[0], lines[1]
    assert set(rule.replace(" ", "")) <= {"-"}, rule
    spans, i = [], 0
    for width in [len(x) for x in rule.split("  ")]:
        spans.append((i, i + width))
        i += width + 2
    names = [header[a:b].strip() for a, b in spans]
    return [{n: line[a:b].strip() for n, (a, b) in zip(names, spans)} for line in lines[2:]]


def test_queues_exchanges_bindings_purge(broker):
    assert admin(broker, "declare", "queue", "--name", "orders").stdout == 'declared queue "orders"\n'
    assert admin(broker, "declare", "queue", "--name", "orders").stdout == 'updated queue "orders"\n'
    admin(broker, "declare", "queue", "--name", "capped", "--durable", "false",
          "--arguments", '{"x-max-length": 2}')
    admin(broker, "declare", "exchange", "--name", "events", "--type", "topic")
    admin(broker, "declare", "binding", "--source", "events", "--destination", "orders",
          "--routing-key", "order.*")
    conn = pika.BlockingConnection(pika.URLParameters(broker.url))
    ch = conn.channel()
    ch.confirm_delivery()
    for i in range(3):
        ch.basic_publish("events", "order.created", b"o%d" % i)
    for i in range(5):
        ch.basic_publish("", "capped", b"c")
    conn.close()
    rows = {r["name"]: r for r in table(admin(broker, "list", "queues").stdout)}
    assert rows["orders"]["messages"] == "3" and rows["orders"]["vhost"] == "/"
    assert rows["orders"]["durable"] == "true" and rows["orders"]["type"] == "classic"
    assert rows["capped"]["messages"] == "2" and rows["capped"]["durable"] == "false"
    js = json.loads(admin(broker, "list", "queues", "--json").stdout)
    assert {q["name"]: q["messages"] for q in js} == {"orders": 3, "capped": 2}
    assert json.loads(admin(broker, "list", "queues", "--json", "--vhost", "/").stdout)
    ex = {r["name"]: r for r in table(admin(broker, "list", "exchanges").stdout)}
    assert ex["events"]["type"] == "topic"
    assert ex["events"]["publish_in"] == "3" and ex["events"]["publish_out"] == "3"
    binds = [r for r in table(admin(broker, "list", "bindings").stdout) if r["source"] == "events"]
    assert binds == [{"vhost": "/", "source": "events", "destination": "orders",
                      "destination_type": "queue", "routing_key": "order.*",
                      "properties_key": "order.%2A"}]
    assert admin(broker, "purge", "--name", "orders").stdout == 'purged queue "orders" in vhost "/"\n'
    rows = {r["name"]: r for r in table(admin(broker, "list", "queues").stdout)}
    assert rows["orders"]["messages"] == "0"
    admin(broker, "delete", "binding", "--source", "events", "--destination", "orders",
          "--routing-key", "order.*")
    assert not [r for r in table(admin(broker, "list", "bindings").stdout) if r["source"] == "events"]
    admin(broker, "delete", "exchange", "--name", "events")
    admin(broker, "delete", "queue", "--name", "orders")
    # --if-empty refuses a queue with messages (the API's 400).
    r = admin(broker, "delete", "queue", "--name", "capped", "--if-empty", check=False)
    assert r.returncode == 1 and "HTTP 400" in r.stderr
    names = [r["name"] for r in table(admin(broker, "list", "queues").stdout)]
    assert names == ["capped"]
    out = admin(broker, "overview").stdout
    assert {r["key"]: r["value"] for r in table(out)}["queues"] == "1"
    assert json.loads(admin(broker, "overview", "--json").stdout)["object_totals"]["queues"] == 1


def test_connections_and_close(broker):
    conn = pika.BlockingConnection(pika.URLParameters(broker.url))
    conn.channel()
    rows = table(admin(broker, "list", "connections").stdout)
    assert len(rows) == 1 and rows[0]["protocol"] == "AMQP 0-9-1" and rows[0]["user"] == "guest"
    chans = table(admin(broker, "list", "channels").stdout)
    assert len(chans) == 1 and chans[0]["name"] == rows[0]["name"] + " (1)"
    name = json.loads(admin(broker, "list", "connections", "--json").stdout)[0]["name"]
    assert admin(broker, "close", "--name", name, "--reason", "maintenance").stdout == \
        f'closed connection "{name}"\n'
    with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as e:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            conn.process_data_events(0.1)
    assert e.value.reply_code == 320 and "maintenance" in e.value.reply_text
    wait_until(lambda: table(admin(broker, "list", "connections").stdout) == [],
               what="the connection to go")
    r = admin(broker, "close", "--name", "1.2.3.4:5 -> 6.7.8.9:10", check=False)
    assert r.returncode == 1 and "HTTP 404" in r.stderr


def test_users_vhosts_permissions(broker):
    admin(broker, "declare", "vhost", "--name", "tenant", "--description", "a tenant")
    assert admin(broker, "declare", "user", "--name", "ops", "--user-password", "s3cret",
                 "--tags", "monitoring,management").stdout == 'declared user "ops"\n'
    admin(broker, "declare", "permission", "--vhost", "tenant", "--user", "ops",
          "--configure", "^ops\\.", "--read", ".*", "--write", "")
    users = {r["name"]: r for r in table(admin(broker, "list", "users").stdout)}
    assert users["ops"]["tags"] == "monitoring,management"
    vhosts = {r["name"]: r for r in table(admin(broker, "list", "vhosts").stdout)}
    assert vhosts["tenant"]["description"] == "a tenant" and "/" in vhosts
    perms = table(admin(broker, "list", "permissions", "--vhost", "tenant").stdout)
    assert perms == [{"vhost": "tenant", "user": "ops", "configure": "^ops\\.", "write": "",
                      "read": ".*"}]
    perms_json = json.loads(admin(broker, "list", "permissions", "--json").stdout)
    assert {(p["vhost"], p["user"]) for p in perms_json} >= {("tenant", "ops"), ("/", "guest")}
    # The new user works with admin too (a monitor may list queues everywhere), and is
    # refused what needs administrator (401, exit 1).
    assert admin(broker, "list", "queues", user="ops", password="s3cret").returncode == 0
    r = admin(broker, "list", "users", user="ops", password="s3cret", check=False)
    assert r.returncode == 1 and "HTTP 401" in r.stderr
    # A new vhost grants nobody anything: guest needs permissions to declare there.
    r = admin(broker, "declare", "queue", "--vhost", "tenant", "--name", "ops.q", check=False)
    assert r.returncode == 1 and "HTTP 401" in r.stderr
    admin(broker, "declare", "permission", "--vhost", "tenant", "--user", "guest")
    admin(broker, "declare", "queue", "--vhost", "tenant", "--name", "ops.q")
    assert [r["vhost"] for r in table(admin(broker, "list", "queues").stdout)] == ["tenant"]
    admin(broker, "delete", "permission", "--vhost", "tenant", "--user", "ops")
    assert [p["user"] for p in table(admin(broker, "list", "permissions", "--vhost",
                                           "tenant").stdout)] == ["guest"]
    admin(broker, "delete", "user", "--name", "ops")
    admin(broker, "delete", "vhost", "--name", "tenant")
    assert "tenant" not in {r["name"] for r in table(admin(broker, "list", "vhosts").stdout)}


def test_export_and_import_definitions(broker, tmp_path):
    admin(broker, "declare", "queue", "--name", "keep")
    admin(broker, "declare", "exchange", "--name", "x", "--type", "fanout")
    admin(broker, "declare", "binding", "--source", "x", "--destination", "keep")
    path = tmp_path / "defs.json"
    assert admin(broker, "export", str(path)).stdout == f"exported definitions to {path}\n"
    defs = json.loads(path.read_text())
    assert [q["name"] for q in defs["queues"]] == ["keep"]
    stdout_defs = json.loads(admin(broker, "export", "-").stdout)
    assert stdout_defs["queues"] == defs["queues"]
    admin(broker, "delete", "exchange", "--name", "x")
    admin(broker, "delete", "queue", "--name", "keep")
    assert admin(broker, "import", str(path)).stdout == f"imported definitions from {path}\n"
    assert [r["name"] for r in table(admin(broker, "list", "queues").stdout)] == ["keep"]
    assert [r for r in table(admin(broker, "list", "bindings").stdout)
            if r["source"] == "x" and r["destination"] == "keep"]
    # Per vhost, through standard input.
    vdefs = json.loads(admin(broker, "export", "-", "--vhost", "/").stdout)
    vdefs["queues"].append({"name": "from-stdin", "durable": True, "auto_delete": False,
                            "arguments": {}})
    admin(broker, "import", "-", "--vhost", "/", stdin=json.dumps(vdefs))
    assert "from-stdin" in [r["name"] for r in table(admin(broker, "list", "queues").stdout)]
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    r = admin(broker, "import", str(bad), check=False)
    assert r.returncode == 4 and "not JSON" in r.stderr


def test_kafka_topics_and_groups_with_lag(kbroker):
    p = KafkaProducer(bootstrap_servers=kbroker.kafka_bootstrap)
    for i in range(6):
        p.send("clicks", b"c%d" % i)
    p.flush()
    p.close()
    topics = table(admin(kbroker, "kafka", "topics").stdout)
    assert topics == [{"vhost": "/", "name": "clicks", "partitions": "1", "messages": "6",
                       "size_bytes": topics[0]["size_bytes"]}]
    parts = table(admin(kbroker, "kafka", "topic", "clicks").stdout)
    assert parts[0]["partition"] == "0" and parts[0]["log_end_offset"] == "6"
    c = KafkaConsumer(bootstrap_servers=kbroker.kafka_bootstrap, group_id="stats",
                      enable_auto_commit=False, auto_offset_reset="earliest")
    c.assign([TopicPartition("clicks", 0)])
    from kafka.structs import OffsetAndMetadata
    try:
        meta = OffsetAndMetadata(2, "", -1)
    except TypeError:
        meta = OffsetAndMetadata(2, "")
    c.commit({TopicPartition("clicks", 0): meta})
    c.close()
    groups = wait_until(lambda: table(admin(kbroker, "kafka", "groups").stdout), what="a group")
    assert groups == [{"vhost": "/", "name": "stats", "state": "Empty", "members": "0",
                       "lag": "4"}]
    out = admin(kbroker, "kafka", "group", "stats").stdout
    assert out.startswith('group "stats": state Empty, 0 member(s), lag 4\n')
    assert table(out.split("\n", 1)[1]) == [{"topic": "clicks", "partition": "0",
                                             "committed": "2", "log_end": "6", "lag": "4"}]
    js = json.loads(admin(kbroker, "kafka", "groups", "--json").stdout)
    assert js[0]["lag"] == 4
    r = admin(kbroker, "kafka", "group", "nobody", check=False)
    assert r.returncode == 1 and "HTTP 404" in r.stderr


def test_errors_and_exit_codes(broker):
    r = admin(broker, "delete", "queue", "--name", "missing", check=False)
    assert r.returncode == 1
    assert r.stderr == ("ferrymq admin: DELETE /api/queues/%2F/missing: HTTP 404: "
                        "Object Not Found (Not Found)\n")
    r = admin(broker, "list", "queues", password="wrong", check=False)
    assert r.returncode == 1 and "HTTP 401" in r.stderr and "not_authorized" in r.stderr
    r = admin(broker, "declare", "queue", "--name", "q", "--arguments", "[1]", check=False)
    assert r.returncode == 4 and "JSON object" in r.stderr
    r = admin(broker, "declare", "exchange", "--name", "e", "--type", "bogus", check=False)
    assert r.returncode == 1 and "HTTP 400" in r.stderr
    r = admin(broker, "list", "nonsense", check=False)
    assert r.returncode == 2
    r = admin(broker, "list", "queues", check=False, port=_closed_port())
    assert r.returncode == 3 and "cannot reach" in r.stderr
    r = admin(broker, "list", "queues", "--vhost", "no-such-vhost", check=False)
    assert r.returncode == 1 and "HTTP 404" in r.stderr


def _closed_port() -> int:
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port
