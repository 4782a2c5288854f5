"""Debian's classic `rabbitmqadmin` script (from the rabbitmq-server package; only the
script is used) against FerryMQ: list, declare, publish, get, export, import. It sends
booleans and numbers as strings and reads the fields it prints."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

CANDIDATES = [
    os.environ.get("RABBITMQADMIN", ""),
    "/usr/bin/rabbitmqadmin",
    "/usr/sbin/rabbitmqadmin",
    *sorted(str(p) for p in Path("/usr/lib/rabbitmq").glob("lib/*/plugins/rabbitmq_management-*/priv/www/cli/rabbitmqadmin")),
]


def find_script():
    for c in CANDIDATES:
        if c and Path(c).is_file():
            return c
    return shutil.which("rabbitmqadmin")


SCRIPT = find_script()
pytestmark = pytest.mark.skipif(
    SCRIPT is None and not os.environ.get("CI"),
    reason="rabbitmqadmin not installed (apt-get install rabbitmq-server; .ci/run does)")


@pytest.fixture
def admin(broker):
    assert SCRIPT, "rabbitmqadmin not found (apt-get install rabbitmq-server)"

    def run(*args, check=True):
        cmd = [sys.executable, SCRIPT, "-H", "127.0.0.1", "-P", str(broker.ports["http"]),
               "-u", "guest", "-p", "guest", *args]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
        if check:
            assert r.returncode == 0, f"{args}: {r.stdout}{r.stderr}"
        return r
    return run


def test_declare_list_publish_get(admin, api):
    admin("declare", "queue", "name=work", "durable=true")
    admin("declare", "exchange", "name=jobs", "type=direct")
    admin("declare", "binding", "source=jobs", "destination=work", "routing_key=go")
    admin("publish", "exchange=jobs", "routing_key=go", "payload=hello")
    out = admin("publish", "routing_key=work", "payload=hi").stdout
    assert "Message published" in out
    out = admin("-f", "raw_json", "list", "queues").stdout
    queues = {q["name"]: q for q in json.loads(out)}
    assert queues["work"]["messages"] == 2
    out = admin("-f", "raw_json", "list", "exchanges", "name", "type").stdout
    assert {"name": "jobs", "type": "direct"} in json.loads(out)
    out = admin("-f", "tsv", "list", "bindings", "source", "destination", "routing_key").stdout
    assert "jobs\twork\tgo" in out
    out = admin("-f", "raw_json", "get", "queue=work", "count=2", "ackmode=ack_requeue_false").stdout
    msgs = json.loads(out)
    assert [m["payload"] for m in msgs] == ["hello", "hi"]
    assert api.ok("GET", "/api/queues/%2F/work")["messages"] == 0
    out = admin("show", "overview").stdout
    assert "3.13.7" in out
    admin("list", "connections")
    admin("list", "channels")
    admin("list", "users")
    admin("list", "vhosts")
    admin("list", "nodes")
    admin("list", "permissions")
    admin("list", "policies")
    admin("delete", "binding", "source=jobs", "destination_type=queue", "destination=work",
          "properties_key=go")
    assert api.ok("GET", "/api/bindings/%2F/e/jobs/q/work") == []
    admin("purge", "queue", "name=work")
    admin("delete", "queue", "name=work")
    assert api.get("/api/queues/%2F/work").status_code == 404


def test_users_vhosts_permissions_policies(admin, api):
    admin("declare", "vhost", "name=ci")
    admin("declare", "user", "name=bob", "password=pw", "tags=monitoring")
    admin("declare", "permission", "vhost=ci", "user=bob", "configure=.*", "write=.*", "read=.*")
    admin("declare", "policy", "name=ttl", "pattern=.*", 'definition={"message-ttl": 1000}')
    assert api.ok("GET", "/api/users/bob")["tags"] == ["monitoring"]
    assert api.ok("GET", "/api/permissions/ci/bob")["read"] == ".*"
    assert api.ok("GET", "/api/policies/%2F/ttl")["definition"] == {"message-ttl": 1000}
    admin("delete", "policy", "name=ttl")
    admin("delete", "user", "name=bob")
    admin("delete", "vhost", "name=ci")
    assert api.get("/api/vhosts/ci").status_code == 404


def test_export_import(admin, api, tmp_path):
    admin("declare", "queue", "name=keep", "durable=true", 'arguments={"x-max-length": 5}')
    path = tmp_path / "defs.json"
    admin("export", str(path))
    doc = json.loads(path.read_text())
    assert "keep" in [q["name"] for q in doc["queues"]]
    admin("delete", "queue", "name=keep")
    admin("import", str(path))
    assert api.ok("GET", "/api/queues/%2F/keep")["arguments"] == {"x-max-length": 5}
