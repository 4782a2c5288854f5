"""The suite's own helpers checked against published vectors and the current broker, so
a failure elsewhere is the broker's, not a helper's."""

from __future__ import annotations

import base64

import pytest

import amqp_raw
import kafka_wire
import sechelpers as sh

pytestmark = pytest.mark.timeout(30)


def test_rabbit_hash_vector():
    # RabbitMQ's documented vector: salt 908DC60A + "test12".
    assert sh.rabbit_hash("test12", salt=bytes.fromhex("908DC60A")) == sh.TEST12_HASH
    h = base64.b64decode(sh.rabbit_hash("x", "rabbit_password_hashing_sha512"))
    assert len(h) == 4 + 64
    h = base64.b64decode(sh.rabbit_hash("x", "rabbit_password_hashing_md5"))
    assert len(h) == 4 + 16


def test_scram_client_rfc7677_vector():
    c = kafka_wire.ScramClient("SCRAM-SHA-256", "user", "pencil", nonce="rOprNGfwEbeRWgbNEkqO")
    assert c.first() == b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO"
    final = c.final(b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
                    b"s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096")
    assert final == (b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
                     b"p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=")
    c.verify_server(b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")
    assert kafka_wire.saslname("a=b,c") == "a=3Db=2Cc"


def test_amqp_table_roundtrip():
    t = amqp_raw.table({"a": "x", "b": True, "c": {"d": 5}})
    parsed, end = amqp_raw.parse_table(t, 0)
    assert end == len(t)
    assert parsed == {"a": b"x", "b": True, "c": {"d": 5}}


def test_raw_amqp_guest_plain_and_open(start_broker):
    b = start_broker()
    m = amqp_raw.login("127.0.0.1", b.port, "PLAIN", amqp_raw.plain_response("guest", "guest"))
    assert m.name == (10, 41), m


def test_raw_kafka_api_versions_and_metadata(start_broker):
    b = start_broker(kafka=True)
    with kafka_wire.KafkaWire("127.0.0.1", b.kafka_port) as k:
        versions = k.api_versions()
        assert kafka_wire.API_METADATA in versions
        assert isinstance(k.metadata_all(), list)
