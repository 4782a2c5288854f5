"""Rates from the 5 s sampler: `*_details.rate` turns positive under load and the
`msg_rates_age` sample series fill in."""

import time


def test_publish_rate_appears(api, amqp):
    c = amqp()
    ch = c.channel()
    ch.queue_declare("rated")
    ch.confirm_delivery()
    deadline = time.monotonic() + 12
    rate = 0.0
    while time.monotonic() < deadline:
        for _ in range(20):
            ch.basic_publish("", "rated", b"x")
        x = api.ok("GET", "/api/queues/%2F/rated?msg_rates_age=30&msg_rates_incr=5")
        rate = x["message_stats"]["publish_details"]["rate"]
        if rate > 0:
            break
        time.sleep(0.2)
    assert rate > 0
    d = x["message_stats"]["publish_details"]
    assert len(d["samples"]) >= 2 and d["avg_rate"] >= 0
    o = api.ok("GET", "/api/overview")
    assert o["message_stats"]["publish_details"]["rate"] > 0
    chan = api.ok("GET", "/api/channels")[0]
    assert chan["message_stats"]["publish_details"]["rate"] > 0


def test_exchange_rates_appear(api, amqp):
    ch = amqp().channel()
    ch.exchange_declare("rated.fan", "fanout")
    for q in ("rated.a", "rated.b"):
        ch.queue_declare(q)
        ch.queue_bind(q, "rated.fan")
    ch.confirm_delivery()
    deadline = time.monotonic() + 12
    ms = {}
    while time.monotonic() < deadline:
        for _ in range(20):
            ch.basic_publish("rated.fan", "", b"x")
        x = api.ok("GET", "/api/exchanges/%2F/rated.fan?msg_rates_age=30&msg_rates_incr=5")
        ms = x["message_stats"]
        if ms["publish_in_details"]["rate"] > 0:
            break
        time.sleep(0.2)
    rate_in = ms["publish_in_details"]["rate"]
    assert rate_in > 0
    # Fanout to two queues: about twice as many out as in between the same two samples.
    assert abs(ms["publish_out_details"]["rate"] - 2 * rate_in) <= 0.25 * rate_in + 1
    assert len(ms["publish_in_details"]["samples"]) >= 2
    assert ms["publish_in"] >= 20 and ms["publish_out"] == 2 * ms["publish_in"]
    # The list carries the same fields (rates without the sample series).
    listed = {e["name"]: e for e in api.ok("GET", "/api/exchanges/%2F")}
    assert listed["rated.fan"]["message_stats"]["publish_in_details"]["rate"] >= 0
    assert "samples" not in listed["rated.fan"]["message_stats"]["publish_in_details"]
    idle = listed["amq.direct"]["message_stats"]
    assert idle["publish_in"] == 0 and idle["publish_in_details"] == {"rate": 0.0}
