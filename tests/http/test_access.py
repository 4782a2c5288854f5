"""Vhosts, users, permissions, topic permissions and limits (admin endpoints, through the
user store and Broker::create_vhost / delete_vhost)."""

import pika
import pytest

from conftest import Api, q


def test_vhost_lifecycle(api, amqp, broker):
    assert api.put("/api/vhosts/team-a", {"description": "A", "tags": "x,y",
                                          "default_queue_type": "classic"}).status_code == 201
    assert api.put("/api/vhosts/team-a", {"description": "A2"}).status_code == 204
    v = api.ok("GET", "/api/vhosts/team-a")
    assert v["name"] == "team-a" and v["description"] == "A2" and v["tags"] == ["x", "y"]
    assert type(v["messages"]) is int
    assert "team-a" in [x["name"] for x in api.ok("GET", "/api/vhosts")]
    # amq.* exist at once.
    assert api.ok("GET", "/api/exchanges/team-a/amq.topic")["type"] == "topic"
    api.ok("PUT", "/api/permissions/team-a/guest", {"configure": ".*", "write": ".*", "read": ".*"})
    api.ok("PUT", "/api/queues/team-a/work", {})
    c = amqp(broker.url_for(vhost="team-a"))
    assert c.is_open
    assert api.delete("/api/vhosts/team-a").status_code == 204
    assert api.get("/api/vhosts/team-a").status_code == 404
    assert api.get("/api/queues/team-a/work").status_code == 404
    assert api.delete("/api/vhosts/team-a").status_code == 404
    # The open connection is closed (320) within a second or so.
    with pytest.raises(pika.exceptions.AMQPConnectionError):
        for _ in range(50):
            c.process_data_events(time_limit=0.1)
    # An empty vhost segment or `/` written out.
    assert api.ok("GET", "/api/vhosts/%2F")["name"] == "/"
    assert api.put("/api/vhosts/bad", {"default_queue_type": "weird"}).status_code == 400
    assert api.get("/api/vhosts/bad").status_code == 404


def test_users_password_hash_tags_and_login(api, broker, amqp):
    # Clear password, tags as a comma string.
    assert api.put("/api/users/u1", {"password": "s3cret", "tags": "management,policymaker"}).status_code == 201
    u = api.ok("GET", "/api/users/u1")
    assert u["tags"] == ["management", "policymaker"]
    assert u["hashing_algorithm"] == "rabbit_password_hashing_sha256"
    assert Api(broker.http_url, auth=("u1", "s3cret")).get("/api/whoami").status_code == 200
    # A hash copied from u1 into u2 logs in with the same password.
    assert api.put("/api/users/u2", {"password_hash": u["password_hash"], "tags": ["monitoring"]}).status_code == 201
    assert Api(broker.http_url, auth=("u2", "s3cret")).ok("GET", "/api/whoami")["tags"] == ["monitoring"]
    # Update without a password keeps it.
    assert api.put("/api/users/u2", {"tags": ""}).status_code == 204
    assert api.ok("GET", "/api/users/u2")["tags"] == []
    names = [x["name"] for x in api.ok("GET", "/api/users")]
    assert {"guest", "u1", "u2"} <= set(names)
    for x in api.ok("GET", "/api/users"):
        assert isinstance(x["tags"], list)
    assert "u1" in [x["name"] for x in api.ok("GET", "/api/users/without-permissions")]
    # Bad bodies.
    assert api.put("/api/users/u3", {"password": "a", "password_hash": "b", "tags": ""}).status_code == 400
    assert api.put("/api/users/u3", {"password": "a"}).status_code == 400
    assert api.put("/api/users/u3", {"password_hash": "!!!", "tags": ""}).status_code == 400
    assert api.put("/api/users/u3", {"password": "a", "tags": 5}).status_code == 400
    assert api.get("/api/users/u3").status_code == 404
    # AMQP login with the new user after granting permissions.
    api.ok("PUT", "/api/permissions/%2F/u1", {"configure": ".*", "write": ".*", "read": ".*"})
    assert amqp(broker.url_for(user="u1", password="s3cret")).is_open
    assert api.delete("/api/users/u1").status_code == 204
    assert api.delete("/api/users/u1").status_code == 404
    assert api.ok("POST", "/api/users/bulk-delete", {"users": ["u2", "nobody"]}) is None
    assert api.get("/api/users/u2").status_code == 404


def test_permissions_and_topic_permissions(api):
    api.ok("PUT", "/api/users/p", {"password": "pw", "tags": ""})
    assert api.put("/api/permissions/%2F/p", {"configure": "^p", "write": ".*", "read": ".*"}).status_code == 201
    assert api.put("/api/permissions/%2F/p", {"configure": "^p", "write": "", "read": ".*"}).status_code == 204
    p = api.ok("GET", "/api/permissions/%2F/p")
    assert p == {"user": "p", "vhost": "/", "configure": "^p", "write": "", "read": ".*"}
    assert p in api.ok("GET", "/api/permissions")
    assert p in api.ok("GET", "/api/users/p/permissions")
    assert p in api.ok("GET", "/api/vhosts/%2F/permissions")
    assert api.put("/api/permissions/%2F/p", {"configure": "(", "write": "", "read": ""}).status_code == 400
    assert api.put("/api/permissions/%2F/p", {"configure": ".*"}).status_code == 400
    assert api.put("/api/permissions/nope/p", {"configure": "", "write": "", "read": ""}).status_code == 404
    assert api.put("/api/permissions/%2F/nobody", {"configure": "", "write": "", "read": ""}).status_code == 404
    assert api.put("/api/topic-permissions/%2F/p", {"exchange": "amq.topic", "write": "^a", "read": ".*"}).status_code == 201
    t = api.ok("GET", "/api/topic-permissions/%2F/p")
    assert t == [{"user": "p", "vhost": "/", "exchange": "amq.topic", "write": "^a", "read": ".*"}]
    assert len(api.ok("GET", "/api/topic-permissions")) == 1
    assert api.delete("/api/topic-permissions/%2F/p").status_code == 204
    assert api.get("/api/topic-permissions/%2F/p").status_code == 404
    assert api.delete("/api/permissions/%2F/p").status_code == 204
    assert api.get("/api/permissions/%2F/p").status_code == 404


def test_vhost_and_user_limits(api, amqp, broker):
    assert api.put("/api/vhost-limits/%2F/max-queues", {"value": "2"}).status_code == 204
    assert api.ok("GET", "/api/vhost-limits/%2F") == [{"vhost": "/", "value": {"max-queues": 2}}]
    assert api.ok("GET", "/api/vhost-limits") == [{"vhost": "/", "value": {"max-queues": 2}}]
    api.ok("PUT", "/api/queues/%2F/l1", {})
    api.ok("PUT", "/api/queues/%2F/l2", {})
    r = api.put("/api/queues/%2F/l3", {})
    assert r.status_code == 400 and "limit" in r.json()["reason"]
    assert api.delete("/api/vhost-limits/%2F/max-queues").status_code == 204
    assert api.ok("GET", "/api/vhost-limits/%2F") == []
    assert api.put("/api/queues/%2F/l3", {}).status_code == 201
    assert api.put("/api/vhost-limits/%2F/max-widgets", {"value": 1}).status_code == 400
    assert api.put("/api/vhost-limits/%2F/max-queues", {"value": "many"}).status_code == 400
    assert api.put("/api/vhost-limits/%2F/max-queues", {}).status_code == 400
    assert api.put("/api/user-limits/guest/max-connections", {"value": 1}).status_code == 204
    assert api.ok("GET", "/api/user-limits/guest") == [{"user": "guest", "value": {"max-connections": 1}}]
    amqp()
    with pytest.raises(pika.exceptions.AMQPConnectionError):
        amqp()
    assert api.delete("/api/user-limits/guest/max-connections").status_code == 204
    assert api.ok("GET", "/api/user-limits") == []
    assert amqp().is_open


def test_revoked_and_changed_permissions_apply_to_open_channels(api, amqp, broker):
    """Beyond RabbitMQ (whose per-channel cache can miss a revoke on a busy channel): a
    permission change applies to an already open channel at its next operation."""
    api.ok("PUT", "/api/users/bob", {"password": "bob-pw", "tags": ""})
    api.ok("PUT", "/api/permissions/%2F/bob", {"configure": ".*", "write": ".*", "read": ".*"})
    c = amqp(broker.url_for(user="bob", password="bob-pw"))
    ch = c.channel()
    ch.confirm_delivery()
    ch.queue_declare("bob.q1")
    ch.basic_publish("", "bob.q1", b"before")
    # Narrow configure to ^app\. on the open connection.
    api.ok("PUT", "/api/permissions/%2F/bob", {"configure": "^app\\.", "write": ".*", "read": ".*"})
    ch.queue_declare("app.ok")
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
        ch.queue_declare("bob.q2")
    assert e.value.reply_code == 403
    assert e.value.reply_text == (
        "ACCESS_REFUSED - configure access to queue 'bob.q2' in vhost '/' refused for user 'bob'")
    # Revoke everything: a publish on a fresh channel of the same connection is refused.
    api.ok("DELETE", "/api/permissions/%2F/bob")
    ch2 = c.channel()
    ch2.confirm_delivery()
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
        ch2.basic_publish("", "bob.q1", b"after")
    assert e.value.reply_code == 403
    assert "write access to exchange 'amq.default' in vhost '/' refused for user 'bob'" in \
        e.value.reply_text
    # Only "before" reached the queue.
    assert api.ok("GET", "/api/queues/%2F/bob.q1")["messages"] == 1
