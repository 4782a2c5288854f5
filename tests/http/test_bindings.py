"""Bindings: list forms, POST with Location and properties_key (Terraform reads the last
Location segment), GET and DELETE by properties_key."""

import pytest

from conftest import q

NG_BINDING_FIELDS = ["vhost", "source", "destination", "destination_type", "routing_key", "arguments"]


def test_terraform_binding_lifecycle(api):
    api.ok("PUT", "/api/queues/%2F/q", {})
    r = api.post("/api/bindings/%2F/e/amq.direct/q/q", {"routing_key": "rk"})
    assert r.status_code == 201, r.text
    loc = r.headers["Location"]
    assert loc.endswith("/rk")
    props = loc.rsplit("/", 1)[1]
    b = api.ok("GET", f"/api/bindings/%2F/e/amq.direct/q/q/{props}")
    assert b["routing_key"] == "rk" and b["properties_key"] == "rk"
    for k in NG_BINDING_FIELDS:
        assert k in b
    assert api.delete("/api/bindings/%2F/e/amq.direct/q/q/rk").status_code == 204
    assert api.get("/api/bindings/%2F/e/amq.direct/q/q/rk").status_code == 404
    assert api.delete("/api/bindings/%2F/e/amq.direct/q/q/rk").status_code == 404


def test_list_forms_include_default_bindings(api):
    api.ok("PUT", "/api/queues/%2F/lq", {})
    api.ok("PUT", "/api/exchanges/%2F/src", {"type": "fanout"})
    api.ok("PUT", "/api/exchanges/%2F/dst", {"type": "fanout"})
    api.ok("POST", "/api/bindings/%2F/e/src/q/lq", {"routing_key": ""})
    api.ok("POST", "/api/bindings/%2F/e/src/e/dst", {"routing_key": "k"})
    all_ = api.ok("GET", "/api/bindings/%2F")
    assert {"source": "", "destination": "lq", "destination_type": "queue", "routing_key": "lq",
            "vhost": "/", "arguments": {}, "properties_key": "lq"} in all_
    assert len(api.ok("GET", "/api/bindings")) == len(all_)
    qb = api.ok("GET", "/api/queues/%2F/lq/bindings")
    assert sorted(b["source"] for b in qb) == ["", "src"]
    assert [b["properties_key"] for b in qb if b["source"] == "src"] == ["~"]
    assert len(api.ok("GET", "/api/exchanges/%2F/src/bindings/source")) == 2
    assert [b["source"] for b in api.ok("GET", "/api/exchanges/%2F/dst/bindings/destination")] == ["src"]
    assert len(api.ok("GET", "/api/bindings/%2F/e/src/q/lq")) == 1
    assert len(api.ok("GET", "/api/bindings/%2F/e/src/e/dst")) == 1
    assert api.delete("/api/bindings/%2F/e/src/q/lq/~").status_code == 204
    assert api.ok("GET", "/api/bindings/%2F/e/src/q/lq") == []


def test_arguments_make_their_own_key(api):
    api.ok("PUT", "/api/queues/%2F/hq", {})
    r1 = api.post("/api/bindings/%2F/e/amq.headers/q/hq", {"routing_key": "", "arguments": {"x-match": "all", "a": "1"}})
    r2 = api.post("/api/bindings/%2F/e/amq.headers/q/hq", {"routing_key": "", "arguments": {"x-match": "any", "a": "1"}})
    k1, k2 = (r.headers["Location"].rsplit("/", 1)[1] for r in (r1, r2))
    assert k1 != k2 and k1.startswith("~")
    assert api.ok("GET", f"/api/bindings/%2F/e/amq.headers/q/hq/{k1}")["arguments"]["x-match"] == "all"
    assert api.delete(f"/api/bindings/%2F/e/amq.headers/q/hq/{k2}").status_code == 204
    left = api.ok("GET", "/api/bindings/%2F/e/amq.headers/q/hq")
    assert [b["arguments"]["x-match"] for b in left] == ["all"]


@pytest.mark.parametrize("key", ["a/b", "50%", "ключ", "has space", "a+b", "t~x"])
def test_odd_routing_keys(api, key):
    api.ok("PUT", "/api/queues/%2F/oq", {})
    r = api.post("/api/bindings/%2F/e/amq.topic/q/oq", {"routing_key": key})
    assert r.status_code == 201
    props = r.headers["Location"].rsplit("/", 1)[1]
    listed = [b for b in api.ok("GET", "/api/bindings/%2F/e/amq.topic/q/oq")]
    assert listed[0]["routing_key"] == key and listed[0]["properties_key"] == props
    # The key as found in a listing, escaped once more for the path (rabbithole's PathEscape).
    assert api.ok("GET", f"/api/bindings/%2F/e/amq.topic/q/oq/{q(props)}")["routing_key"] == key
    assert api.delete(f"/api/bindings/%2F/e/amq.topic/q/oq/{props}").status_code == 204
    assert api.ok("GET", "/api/bindings/%2F/e/amq.topic/q/oq") == []


def test_missing_ends_and_bad_bodies(api):
    api.ok("PUT", "/api/queues/%2F/bq", {})
    assert api.post("/api/bindings/%2F/e/nope/q/bq", {"routing_key": "k"}).status_code == 404
    assert api.post("/api/bindings/%2F/e/amq.direct/q/nope", {"routing_key": "k"}).status_code == 404
    assert api.post("/api/bindings/%2F/e/amq.direct/x/bq", {"routing_key": "k"}).status_code == 404
    assert api.post("/api/bindings/%2F/e/amq.direct/q/bq", {"routing_key": "k", "arguments": 5}).status_code == 400
    assert api.post("/api/bindings/%2F/e/amq.direct/q/bq", data="{nope", auth=("guest", "guest")).status_code == 400
    assert api.post("/api/bindings/%2F/e/amq.default/q/bq", {"routing_key": "k"}).status_code == 401
    assert [b["source"] for b in api.ok("GET", "/api/queues/%2F/bq/bindings")] == [""]
