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
