"""Definitions export and import, whole broker and per vhost; a bad document changes
nothing."""

import json

from conftest import Api, start_broker


def populate(api):
    api.ok("PUT", "/api/vhosts/dev", {"description": "development"})
    api.ok("PUT", "/api/users/dev", {"password": "pw", "tags": ["management"]})
    api.ok("PUT", "/api/permissions/dev/dev", {"configure": ".*", "write": ".*", "read": ".*"})
    api.ok("PUT", "/api/permissions/dev/guest", {"configure": ".*", "write": ".*", "read": ".*"})
    api.ok("PUT", "/api/exchanges/%2F/ex", {"type": "topic", "arguments": {"alternate-exchange": "amq.fanout"}})
    api.ok("PUT", "/api/queues/%2F/dq", {"arguments": {"x-max-length": 10}})
    api.ok("PUT", "/api/queues/%2F/transient", {"durable": False})
    api.ok("POST", "/api/bindings/%2F/e/ex/q/dq", {"routing_key": "a.#"})
    api.ok("PUT", "/api/policies/%2F/p1", {"pattern": "^dq$", "definition": {"message-ttl": 5000}})
    api.ok("PUT", "/api/queues/dev/devq", {})
    api.ok("PUT", "/api/vhost-limits/dev/max-queues", {"value": 50})


def test_export_shape(api):
    populate(api)
    d = api.ok("GET", "/api/definitions")
    for k in ["rabbit_version", "rabbitmq_version", "product_name", "product_version", "users",
              "vhosts", "permissions", "topic_permissions", "parameters", "global_parameters",
              "policies", "queues", "exchanges", "bindings"]:
        assert k in d, k
    assert {"name": "dq", "vhost": "/", "type": "classic", "durable": True, "auto_delete": False,
            "arguments": {"x-max-length": 10}} in d["queues"]
    assert "transient" not in [q["name"] for q in d["queues"]]
    assert not any(x["name"].startswith("amq.") or x["name"] == "" for x in d["exchanges"])
    assert {"source": "ex", "vhost": "/", "destination": "dq", "destination_type": "queue",
            "routing_key": "a.#", "arguments": {}} in d["bindings"]
    assert [p["name"] for p in d["policies"]] == ["p1"]
    u = next(u for u in d["users"] if u["name"] == "dev")
    assert u["tags"] == ["management"] and u["hashing_algorithm"] and u["password_hash"]
    assert any(p["component"] == "vhost-limits" and p["vhost"] == "dev" for p in d["parameters"])
    v = api.ok("GET", "/api/definitions/dev")
    assert "users" not in v and "vhosts" not in v
    assert [q["name"] for q in v["queues"]] == ["devq"] and "vhost" not in v["queues"][0]
    r = api.get("/api/definitions?download=defs.json")
    assert "attachment" in r.headers["Content-Disposition"]


def test_import_into_a_fresh_broker(api, broker):
    populate(api)
    d = api.ok("GET", "/api/definitions")
    other = start_broker()
    try:
        api2 = Api(other.http_url)
        assert api2.post("/api/definitions", d).status_code == 204
        assert api2.ok("GET", "/api/queues/%2F/dq")["arguments"] == {"x-max-length": 10}
        assert api2.ok("GET", "/api/queues/%2F/dq")["policy"] == "p1"
        assert api2.ok("GET", "/api/exchanges/%2F/ex")["arguments"] == {"alternate-exchange": "amq.fanout"}
        assert len(api2.ok("GET", "/api/bindings/%2F/e/ex/q/dq")) == 1
        assert api2.ok("GET", "/api/queues/dev/devq")["name"] == "devq"
        assert Api(other.http_url, auth=("dev", "pw")).ok("GET", "/api/whoami")["name"] == "dev"
        assert api2.ok("GET", "/api/vhost-limits/dev")[0]["value"] == {"max-queues": 50}
        # Importing the same document again changes nothing.
        assert api2.post("/api/definitions", d).status_code == 204
        exported = api2.ok("GET", "/api/definitions")
        assert sorted(q["name"] for q in exported["queues"]) == sorted(q["name"] for q in d["queues"])
    finally:
        other.cleanup()


def test_per_vhost_import(api):
    api.ok("PUT", "/api/vhosts/a", {})
    api.ok("PUT", "/api/vhosts/b", {})
    for v in ("a", "b"):
        api.ok("PUT", f"/api/permissions/{v}/guest", {"configure": ".*", "write": ".*", "read": ".*"})
    api.ok("PUT", "/api/queues/a/qa", {})
    api.ok("PUT", "/api/exchanges/a/xa", {"type": "fanout"})
    api.ok("POST", "/api/bindings/a/e/xa/q/qa", {})
    doc = api.ok("GET", "/api/definitions/a")
    assert api.post("/api/definitions/b", doc).status_code == 204
    assert api.ok("GET", "/api/queues/b/qa")["vhost"] == "b"
    assert len(api.ok("GET", "/api/bindings/b/e/xa/q/qa")) == 1
    assert api.post("/api/definitions/nope", doc).status_code == 404


def test_bad_documents_change_nothing(api):
    before = api.ok("GET", "/api/definitions")
    bad_docs = [
        b"{not json",
        b"[]",
        json.dumps({"queues": [{"name": "ok1", "vhost": "/"}],
                    "exchanges": [{"name": "x", "vhost": "/", "type": "nope"}]}).encode(),
        json.dumps({"queues": [{"name": "ok2", "vhost": "/"},
                               {"name": "bad", "vhost": "/", "arguments": {"x-max-length": "many"}}]}).encode(),
        json.dumps({"queues": [{"name": "ok3", "vhost": "missing"}]}).encode(),
        json.dumps({"users": [{"name": "x", "password": "a", "password_hash": "b", "tags": []}]}).encode(),
        json.dumps({"bindings": [{"source": "amq.direct", "vhost": "/", "destination": "q",
                                  "destination_type": "widget"}]}).encode(),
        json.dumps({"policies": [{"vhost": "/", "name": "p", "pattern": "(", "definition": {"max-length": 1}}]}).encode(),
    ]
    for doc in bad_docs:
        r = api.post("/api/definitions", data=doc, headers={"content-type": "application/json"})
        assert r.status_code == 400, (doc, r.text)
        assert r.json()["error"] == "bad_request"
    after = api.ok("GET", "/api/definitions")
    assert after == before


def test_admin_only(api, broker):
    api.ok("PUT", "/api/users/m", {"password": "pw", "tags": "management"})
    m = Api(broker.http_url, auth=("m", "pw"))
    assert m.get("/api/definitions").status_code == 401
    assert m.post("/api/definitions", {}).status_code == 401
