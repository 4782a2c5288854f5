"""Bad input gets RabbitMQ's 400/404/413 answers and changes nothing."""

import pytest

from conftest import q


@pytest.mark.parametrize("path,method", [
    ("/api/queues/%2F/q", "PUT"), ("/api/exchanges/%2F/x", "PUT"), ("/api/users/u", "PUT"),
    ("/api/vhosts/v", "PUT"), ("/api/permissions/%2F/guest", "PUT"),
    ("/api/policies/%2F/p", "PUT"), ("/api/bindings/%2F/e/amq.direct/q/q", "POST"),
    ("/api/exchanges/%2F/amq.default/publish", "POST"), ("/api/queues/%2F/q/get", "POST"),
    ("/api/definitions", "POST"),
])
def test_malformed_json(api, path, method):
    api.ok("PUT", "/api/queues/%2F/q", {}) if path.startswith("/api/bindings") or path.endswith("/get") else None
    for body in [b"{", b"\xff\xfe", b"[1,2]", b"\"text\"", b"{\"a\":}"]:
        r = api.request(method, path, data=body, headers={"content-type": "application/json"})
        assert r.status_code == 400, (path, body, r.status_code, r.text)
        assert r.json()["error"] == "bad_request"
    if method == "PUT":
        assert api.get(path).status_code in (404, 200)


def test_wrong_types(api):
    for body in [{"durable": "yes"}, {"auto_delete": 3}, {"arguments": "x"}, {"arguments": 7}]:
        assert api.put("/api/queues/%2F/wt", body).status_code == 400, body
    assert api.get("/api/queues/%2F/wt").status_code == 404
    assert api.put("/api/queues/%2F/wt", {"arguments": {"x-max-length": "ten"}}).status_code == 400
    assert api.put("/api/queues/%2F/wt", {"arguments": {"x-queue-type": "weird"}}).status_code == 400
    assert api.get("/api/queues/%2F/wt").status_code == 404
    # Unknown keys are ignored.
    assert api.put("/api/queues/%2F/wt", {"durable": True, "colour": "blue", "node": "x"}).status_code == 201


def test_huge_bodies_are_413(api):
    big = b"{\"a\": \"" + b"x" * (11 * 1024 * 1024) + b"\"}"
    r = api.put("/api/queues/%2F/big", data=big, headers={"content-type": "application/json"})
    assert r.status_code == 413
    assert api.get("/api/queues/%2F/big").status_code == 404
    # Definitions take up to 100 MiB: 11 MiB of ignored padding is fine.
    doc = b"{\"padding\": \"" + b"x" * (11 * 1024 * 1024) + b"\", \"queues\": [{\"name\": \"fromdefs\", \"vhost\": \"/\"}]}"
    r = api.post("/api/definitions", data=doc, headers={"content-type": "application/json"})
    assert r.status_code == 204, r.text
    assert api.get("/api/queues/%2F/fromdefs").status_code == 200


def test_unknown_vhosts_are_404(api):
    for method, path, body in [
        ("GET", "/api/queues/nope", None), ("GET", "/api/exchanges/nope", None),
        ("GET", "/api/bindings/nope", None), ("PUT", "/api/queues/nope/q", {}),
        ("PUT", "/api/exchanges/nope/x", {"type": "direct"}), ("DELETE", "/api/queues/nope/q", None),
        ("GET", "/api/vhosts/nope", None), ("DELETE", "/api/vhosts/nope", None),
        ("GET", "/api/policies/nope", None), ("GET", "/api/definitions/nope", None),
        ("GET", "/api/consumers/nope", None), ("GET", "/api/kafka/topics/nope", None),
    ]:
        r = api.request(method, path, json=body)
        assert r.status_code == 404, (method, path, r.status_code, r.text)


@pytest.mark.parametrize("vhost", ["a/b", "50%", "вхост", "with space"])
def test_odd_vhost_names(api, vhost):
    assert api.put(f"/api/vhosts/{q(vhost)}", {}).status_code == 201
    api.ok("PUT", f"/api/permissions/{q(vhost)}/guest", {"configure": ".*", "write": ".*", "read": ".*"})
    assert api.put(f"/api/queues/{q(vhost)}/x%2Fy", {}).status_code == 201
    x = api.ok("GET", f"/api/queues/{q(vhost)}/x%2Fy")
    assert (x["vhost"], x["name"]) == (vhost, "x/y")
    assert api.delete(f"/api/vhosts/{q(vhost)}").status_code == 204


def test_invalid_utf8_in_path_is_400(api):
    r = api.get("/api/queues/%2F/%FF%FE")
    assert r.status_code == 400
    assert r.json()["error"] == "bad_request"


def test_long_names(api):
    assert api.put("/api/queues/%2F/" + "q" * 256, {}).status_code == 400
    assert api.put("/api/exchanges/%2F/" + "x" * 256, {"type": "direct"}).status_code == 400
