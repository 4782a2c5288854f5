"""Helpers shared by the security suite: RabbitMQ definitions files, password hashes,
pika connections for a user/vhost/address/TLS, and assertions on refusals with
RabbitMQ's exact codes and texts. They use only public client APIs."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import time
from pathlib import Path

import pika
import pika.exceptions as pex
import pytest

# --------------------------------------------------------------------- passwords

HASHES = {
    "rabbit_password_hashing_sha256": hashlib.sha256,
    "rabbit_password_hashing_sha512": hashlib.sha512,
    "rabbit_password_hashing_md5": hashlib.md5,
}

# RabbitMQ's documented vector (notes §1): salt 908DC60A + "test12".
TEST12_HASH = "kI3GCqW5JLMJa4iX1lo7X4D6XbYqlLgxIs30+P6tENUV2POR"


def rabbit_hash(password: str, algorithm: str = "rabbit_password_hashing_sha256",
                salt: bytes | None = None) -> str:
    """RabbitMQ's password_hash: base64(salt ‖ H(salt ‖ utf8(password))), 4 salt bytes."""
    salt = os.urandom(4) if salt is None else salt
    digest = HASHES[algorithm](salt + password.encode()).digest()
    return base64.b64encode(salt + digest).decode()


# ------------------------------------------------------------------ definitions

def user(name: str, password: str | None = None, *, password_hash: str | None = None,
         algorithm: str = "rabbit_password_hashing_sha256", tags=(), limits=None) -> dict:
    """A `users` entry. With `password` the plaintext field is written (the broker hashes
    it and derives SCRAM credentials); with `password_hash` the RabbitMQ hash ("" =
    passwordless). `tags` may be a list or a comma-separated string."""
    u: dict = {"name": name, "tags": list(tags) if not isinstance(tags, str) else tags}
    if password is not None:
        u["password"] = password
    else:
        u["password_hash"] = password_hash if password_hash is not None else ""
        u["hashing_algorithm"] = algorithm
    if limits is not None:
        u["limits"] = limits
    return u


def vhost(name: str, **meta) -> dict:
    v = {"name": name}
    v.update(meta)
    return v


def perm(user_: str, vhost_: str, configure: str = ".*", write: str = ".*",
         read: str = ".*") -> dict:
    return {"user": user_, "vhost": vhost_, "configure": configure, "write": write,
            "read": read}


def topic_perm(user_: str, vhost_: str, exchange: str, write: str = ".*",
               read: str = ".*") -> dict:
    return {"user": user_, "vhost": vhost_, "exchange": exchange, "write": write,
            "read": read}


def vhost_limits(vhost_: str, **limits) -> dict:
    """`parameters` entry: component vhost-limits, name limits; keys as RabbitMQ spells
    them (max_connections=2 → "max-connections": 2)."""
    return {"vhost": vhost_, "component": "vhost-limits", "name": "limits",
            "value": {k.replace("_", "-"): v for k, v in limits.items()}}


def queue(name: str, vhost_: str, durable: bool = True, arguments=None,
          auto_delete: bool = False) -> dict:
    return {"name": name, "vhost": vhost_, "durable": durable, "auto_delete": auto_delete,
            "arguments": arguments or {}}


def exchange(name: str, vhost_: str, type_: str = "direct", durable: bool = True,
             arguments=None, internal: bool = False) -> dict:
    return {"name": name, "vhost": vhost_, "type": type_, "durable": durable,
            "auto_delete": False, "internal": internal, "arguments": arguments or {}}


def binding(source: str, vhost_: str, destination: str, routing_key: str = "",
            destination_type: str = "queue", arguments=None) -> dict:
    return {"source": source, "vhost": vhost_, "destination": destination,
            "destination_type": destination_type, "routing_key": routing_key,
            "arguments": arguments or {}}


def definitions(users=(), vhosts=(), permissions=(), topic_permissions=(), parameters=(),
                policies=(), queues=(), exchanges=(), bindings=(), **extra) -> dict:
    """A RabbitMQ-format definitions document (the shape `rabbitmqctl export_definitions`
    writes)."""
    d = {
        "rabbit_version": "3.13.7",
        "rabbitmq_version": "3.13.7",
        "product_name": "RabbitMQ",
        "product_version": "3.13.7",
        "users": list(users),
        "vhosts": list(vhosts),
        "permissions": list(permissions),
        "topic_permissions": list(topic_permissions),
        "parameters": list(parameters),
        "global_parameters": [{"name": "cluster_name", "value": "rabbit@ferrytest"}],
        "policies": list(policies),
        "queues": list(queues),
        "exchanges": list(exchanges),
        "bindings": list(bindings),
    }
    d.update(extra)
    return d


def write_definitions(directory: Path, defs: dict | str, name: str = "definitions.json") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(defs if isinstance(defs, str) else json.dumps(defs, indent=2))
    return path


# ------------------------------------------------------------------ connections

def params(port: int, user: str = "guest", password: str = "guest", vhost_: str = "/",
           host: str = "127.0.0.1", ssl_options: pika.SSLOptions | None = None,
           credentials=None, **kw) -> pika.ConnectionParameters:
    p = pika.ConnectionParameters(
        host=host, port=port, virtual_host=vhost_,
        credentials=credentials or pika.PlainCredentials(user, password),
        ssl_options=ssl_options, connection_attempts=1, socket_timeout=10,
        stack_timeout=15, blocked_connection_timeout=30, heartbeat=60, **kw)
    return p


def unwrap(exc: BaseException) -> str:
    """Text of a pika connection error: ProbableAuthenticationError and
    ProbableAccessDeniedError wrap repr(ConnectionClosedByBroker(code, text))."""
    return " ".join(str(a) for a in getattr(exc, "args", ())) or repr(exc)


def assert_channel_refused(fn, code: int, text: str | None = None, *,
                           text_re: str | None = None, conn=None):
    """fn() must end with channel.close `code` and exactly `text` (or matching the
    regex `text_re`, fully). With `conn`, the connection must stay open and serve a new
    channel (a channel error is soft)."""
    with pytest.raises(pex.ChannelClosedByBroker) as ei:
        fn()
    err = ei.value
    assert err.reply_code == code, f"expected {code} {text or text_re!r}, got {err!r}"
    if text is not None:
        assert err.reply_text == text, f"expected {text!r}, got {err.reply_text!r}"
    if text_re is not None:
        assert re.fullmatch(text_re, err.reply_text), \
            f"{err.reply_text!r} does not match {text_re!r}"
    if conn is not None:
        assert conn.is_open, "a channel error must not close the connection"
        conn.channel().close()
    return err


def access_refused(perm_: str, kind: str, name: str, vhost_: str, user_: str) -> str:
    """RabbitMQ's 403 text for a resource permission (current wording, notes §3/§8)."""
    return (f"ACCESS_REFUSED - {perm_} access to {kind} '{name}' in vhost '{vhost_}' "
            f"refused for user '{user_}'")


def topic_refused(perm_: str, routing_key: str, exchange_: str, vhost_: str,
                  user_: str) -> str:
    return (f"ACCESS_REFUSED - {perm_} access to topic '{routing_key}' in exchange "
            f"'{exchange_}' in vhost '{vhost_}' refused for user '{user_}'")


def login_refused(mechanism: str = "PLAIN") -> str:
    return (f"ACCESS_REFUSED - Login was refused using authentication mechanism "
            f"{mechanism}. For details see the broker logfile.")


def vhost_refused(vhost_: str, user_: str) -> str:
    return f"NOT_ALLOWED - access to vhost '{vhost_}' refused for user '{user_}'"


def publish_confirmed(ch, exchange_: str, routing_key: str, body: bytes = b"m",
                      properties: pika.BasicProperties | None = None,
                      mandatory: bool = False) -> None:
    """Publish with publisher confirms on, so a refusal (an asynchronous channel.close)
    surfaces here as ChannelClosedByBroker instead of on some later call."""
    if not getattr(ch, "_ferry_confirms", False):
        ch.confirm_delivery()
        ch._ferry_confirms = True
    ch.basic_publish(exchange_, routing_key, body, properties=properties,
                     mandatory=mandatory)


def get_body(ch, queue_: str, timeout: float = 5.0) -> bytes | None:
    """basic.get (auto-ack) until a message arrives or `timeout` passes; None if none."""
    deadline = time.monotonic() + timeout
    while True:
        method, _props, body = ch.basic_get(queue_, auto_ack=True)
        if method is not None:
            return body
        if time.monotonic() > deadline:
            return None
        ch.connection.sleep(0.05)


def drain_bodies(ch, queue_: str, limit: int = 1000) -> list[bytes]:
    out = []
    for _ in range(limit):
        method, _props, body = ch.basic_get(queue_, auto_ack=True)
        if method is None:
            return out
        out.append(body)
    return out


def wait_until(pred, timeout: float = 10.0, interval: float = 0.05, what: str = "condition"):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            v = pred()
            if v:
                return v
        except Exception as e:  # noqa: BLE001 - reported on timeout
            last = e
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}"
                         + (f" (last error: {last!r})" if last else ""))
