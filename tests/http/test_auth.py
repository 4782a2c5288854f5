"""Basic auth and RabbitMQ's tag rules: 401 (never 403), WWW-Authenticate only on failed
logins, whoami with tags as a list."""

from conftest import Api


def test_no_credentials_is_401_with_challenge(api):
    r = api.get("/api/overview", auth=None)
    assert r.status_code == 401
    assert r.headers["WWW-Authenticate"] == 'Basic realm="RabbitMQ Management"'
    assert r.json()["error"] == "not_authorized"


def test_wrong_password_is_401_login_failed(api):
    r = api.get("/api/overview", auth=("guest", "nope"))
    assert r.status_code == 401
    assert r.json() == {"error": "not_authorized", "reason": "Login failed"}
    assert "WWW-Authenticate" in r.headers
    assert api.get("/api/overview", auth=("nobody", "x")).status_code == 401


def test_whoami(api):
    me = api.ok("GET", "/api/whoami")
    assert me["name"] == "guest"
    assert me["tags"] == ["administrator"]
    assert me["is_internal_user"] is True


def test_tags_decide_and_refusals_are_401_not_403(api, broker):
    api.ok("PUT", "/api/users/mgmt", {"password": "pw", "tags": "management"})
    api.ok("PUT", "/api/users/mon", {"password": "pw", "tags": ["monitoring"]})
    api.ok("PUT", "/api/users/plain", {"password": "pw", "tags": ""})
    mgmt = Api(broker.http_url, auth=("mgmt", "pw"))
    mon = Api(broker.http_url, auth=("mon", "pw"))
    plain = Api(broker.http_url, auth=("plain", "pw"))
    # A management user: overview yes, users and nodes no.
    assert mgmt.get("/api/overview").status_code == 200
    r = mgmt.get("/api/users")
    assert r.status_code == 401, r.text
    assert r.json() == {"error": "not_authorised", "reason": "Not administrator user"}
    assert "WWW-Authenticate" not in r.headers
    assert mgmt.get("/api/nodes").status_code == 401
    assert mgmt.put("/api/vhosts/v1", {}).status_code == 401
    assert mgmt.get("/api/definitions").status_code == 401
    # Without permissions in / it sees no queues there and may not declare.
    assert mgmt.get("/api/queues/%2F").status_code == 401
    assert mgmt.put("/api/queues/%2F/q", {}).status_code == 401
    # A monitor sees nodes and listeners.
    assert mon.get("/api/nodes").status_code == 200
    assert "listeners" in mon.ok("GET", "/api/overview")
    assert "listeners" not in mgmt.ok("GET", "/api/overview")
    # No management tag at all: cannot log in.
    r = plain.get("/api/overview")
    assert r.status_code == 401
    assert r.json()["reason"] == "Not management user"
    for method, path in [("GET", "/api/users"), ("PUT", "/api/users/x"),
                         ("DELETE", "/api/vhosts/%2F"), ("POST", "/api/definitions")]:
        assert mgmt.request(method, path, json={}).status_code == 401


def test_permissions_gate_vhost_objects(api, broker):
    api.ok("PUT", "/api/users/alice", {"password": "pw", "tags": "management"})
    api.ok("PUT", "/api/permissions/%2F/alice", {"configure": "^alice\\.", "write": ".*", "read": ".*"})
    alice = Api(broker.http_url, auth=("alice", "pw"))
    assert alice.put("/api/queues/%2F/alice.q", {}).status_code == 201
    # Refused by the session's permission check: 401, and nothing declared.
    r = alice.put("/api/queues/%2F/other", {})
    assert r.status_code == 401, r.text
    assert api.get("/api/queues/%2F/other").status_code == 404
    assert [x["name"] for x in alice.ok("GET", "/api/queues/%2F")] == ["alice.q"]
