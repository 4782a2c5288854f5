"""The web UI driven in headless Chromium: login, queues (depth, get, publish, create,
delete, paging and filtering with many queues), users, Kafka consumer groups and lag,
escaping of hostile names. pika and kafka-python make the traffic the UI must show."""

import time

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select

from conftest import q, wait_until


def test_served_embedded_with_csp(http):
    r = http.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in r.headers["content-security-policy"]
    assert "/ui/core.js" in r.text
    for path in ("/ui/core.js", "/ui/pages.js", "/ui/kafka.js", "/ui/admin.js", "/ui/app.css"):
        assert http.get(path).status_code == 200, path
    # The UI's own requests get no browser challenge; other clients keep RabbitMQ's.
    assert "www-authenticate" in {k.lower() for k in http.get("/api/whoami", auth=("guest", "nope")).headers}
    r = http.get("/api/whoami", auth=("guest", "nope"), headers={"X-Requested-With": "XMLHttpRequest"})
    assert r.status_code == 401 and "www-authenticate" not in {k.lower() for k in r.headers}


def test_login_wrong_password_refused_then_login_and_logout(ui):
    ui.login("guest", "wrong")
    ui.wait_text("#login-error", lambda t: "Login failed" in t)
    assert not ui.d.find_element(By.ID, "shell").is_displayed()
    assert ui.d.execute_script("return sessionStorage.getItem('ferrymq.auth')") is None
    ui.login("guest", "guest")
    ui.el("#shell")
    ui.wait_text("#whoami", lambda t: t.startswith("guest") and "administrator" in t)
    # Overview numbers are there.
    ui.wait(lambda: ui.d.find_elements(By.CSS_SELECTOR, "#main[data-loaded='1']"), what="overview loaded")
    assert ui.text("[data-card='Queues']").strip() != ""
    # A reload keeps the session (sessionStorage); logout forgets it.
    ui.d.refresh()
    ui.el("#shell")
    ui.el("#logout").click()
    ui.el("#login")
    assert ui.d.execute_script("return sessionStorage.getItem('ferrymq.auth')") is None
    # Revoked credentials send the UI back to the login form (401).
    ui.logged_in()
    ui.d.execute_script("UI.auth = btoa('guest:changed')")
    ui.go("/queues")
    ui.el("#login")
    ui.wait_text("#login-error", lambda t: "log in again" in t)


def _queue_total(ui, name):
    r = ui.row("#list-queues", name)
    return r.find_element(By.CSS_SELECTOR, "td.total").text if r else None


def test_queue_depth_changes_after_publish(ui, amqp):
    ch = amqp().channel()
    ch.queue_declare("ui-depth", durable=True)
    for i in range(3):
        ch.basic_publish("", "ui-depth", b"m%d" % i)
    ui.logged_in()
    ui.go("/queues")
    ui.fill("#list-queues .filter", "ui-depth")
    ui.wait(lambda: _queue_total(ui, "ui-depth") == "3", what="depth 3 in the list")
    for i in range(4):
        ch.basic_publish("", "ui-depth", b"n%d" % i)
    # The list refreshes every 5 s.
    ui.wait(lambda: _queue_total(ui, "ui-depth") == "7", timeout=20, what="depth 7 in the list")
    # The queue page shows the same, and follows a consumer's acks.
    ui.click_in_row("#list-queues", "ui-depth", link="ui-depth")
    ui.wait_text("#q-card-messages", lambda t: t == "7")
    for _ in range(2):
        method, _props, _body = ch.basic_get("ui-depth", auto_ack=True)
        assert method is not None
    ui.wait_text("#q-card-messages", lambda t: t == "5", timeout=20)


def test_get_message_from_queue_page(ui, amqp, http):
    ch = amqp().channel()
    ch.queue_declare("ui-get")
    ch.basic_publish("", "ui-get", "hello from pika ✓".encode())
    ch.basic_publish("", "ui-get", b"second")
    ui.logged_in()
    ui.go("/queue/%2F/ui-get")
    ui.wait_text("#q-card-messages", lambda t: t == "2")
    # Nack with requeue: the message stays.
    ui.el("#q-get-submit").click()
    ui.wait_text("#q-messages", lambda t: "hello from pika ✓" in t)
    assert http.json("/api/queues/%2F/ui-get")["messages"] == 2
    # Ack: it is removed.
    Select(ui.el("#q-get select[name=ackmode]")).select_by_value("ack_requeue_false")
    ui.fill("#q-get input[name=count]", "2")
    ui.el("#q-get-submit").click()
    ui.wait_text("#q-messages", lambda t: "Message 2" in t and "second" in t)
    wait_until(lambda: http.json("/api/queues/%2F/ui-get")["messages"] == 0, what="queue emptied")
    ui.wait_text("#q-card-messages", lambda t: t == "0", timeout=20)
    ui.el("#q-get-submit").click()
    ui.el("#q-empty")


def test_publish_from_ui(ui, amqp, http):
    ch = amqp().channel()
    ch.queue_declare("ui-pub")
    ui.logged_in()
    ui.go("/queue/%2F/ui-pub")
    ui.fill("#q-publish textarea[name=headers]", '{"source": "selenium"}')
    ui.fill("#q-publish textarea[name=payload]", "published by the UI")
    ui.el("#q-publish button").click()
    ui.flash("Message published.")
    method, props, body = wait_until(lambda: (r := ch.basic_get("ui-pub", auto_ack=True))[0] and r,
                                     what="the message in the queue")
    assert body == b"published by the UI"
    assert props.headers == {"source": "selenium"} and props.delivery_mode == 2
    # From an exchange page, with a routing key, through a binding added in the UI.
    ui.go("/exchange/%2F/amq.direct")
    ui.fill("#x-bind input[name=dest]", "ui-pub")
    ui.fill("#x-bind input[name=routing_key]", "rk.ui")
    ui.el("#x-bind button").click()
    ui.flash("Binding added")
    ui.wait_text("#x-src", lambda t: "rk.ui" in t)
    ui.fill("#x-publish input[name=routing_key]", "rk.ui")
    ui.fill("#x-publish textarea[name=payload]", "via amq.direct")
    ui.el("#x-publish button").click()
    ui.flash("Message published.")
    wait_until(lambda: http.json("/api/queues/%2F/ui-pub")["messages"] == 1, what="routed message")


def test_create_and_delete_queue_with_awkward_name(ui, http):
    name = "ui/new %2F queue ü"
    ui.logged_in()
    ui.go("/queues")
    ui.fill("#add-queue-name", name)
    ui.el("#add-queue-submit").click()
    ui.flash(f"Queue {name} declared")
    assert http.json(f"/api/queues/%2F/{q(name)}")["durable"] is True
    ui.fill("#list-queues .filter", "ui/new")
    ui.wait(lambda: ui.row("#list-queues", name), what="new queue listed")
    ui.click_in_row("#list-queues", name, link=name)
    ui.wait_text("#main h1", lambda t: name in t)
    ui.el("#q-delete").click()
    ui.accept_confirm()
    ui.flash(f"Queue {name} deleted")
    wait_until(lambda: http.get(f"/api/queues/%2F/{q(name)}").status_code == 404, what="queue gone")


def test_hostile_names_are_shown_as_text(ui, http):
    name = "<img src=x onerror=window.__xss=1>\"'&"
    assert http.put(f"/api/queues/%2F/{q(name)}", {}).status_code == 201
    ui.logged_in()
    ui.go("/queues")
    ui.fill("#list-queues .filter", "<img")
    ui.wait(lambda: ui.row("#list-queues", name), what="hostile name listed as text")
    ui.click_in_row("#list-queues", name, link=name)
    ui.wait_text("#main h1", lambda t: name in t)
    assert ui.d.execute_script("return window.__xss") is None
    assert not ui.d.find_elements(By.CSS_SELECTOR, "#main img")


def test_create_and_delete_user(ui, http):
    ui.logged_in()
    ui.go("/admin/users")
    ui.fill("#user-name", "ui-alice")
    ui.fill("#user-pass", "s3cret")
    ui.fill("#user-tags", "monitoring, management")
    ui.el("#user-add").click()
    ui.flash("User ui-alice saved")
    u = http.json("/api/users/ui-alice")
    assert sorted(u["tags"]) == ["management", "monitoring"]
    ui.wait(lambda: ui.row("#a-list", "ui-alice"), what="user listed")
    # The new user can log in to the UI (and sees no Admin tab).
    ui.login("ui-alice", "s3cret")
    ui.wait_text("#whoami", lambda t: t.startswith("ui-alice"))
    assert not ui.d.find_element(By.ID, "nav-admin").is_displayed()
    ui.logged_in()
    ui.go("/admin/users")
    ui.wait(lambda: ui.row("#a-list", "ui-alice"), what="user listed")
    ui.click_in_row("#a-list", "ui-alice", css="button.del")
    ui.accept_confirm()
    ui.flash("Deleted user ui-alice")
    wait_until(lambda: http.get("/api/users/ui-alice").status_code == 404, what="user gone")
    ui.wait(lambda: ui.row("#a-list", "ui-alice") is None, what="user row gone")


def _commit(offset):
    from kafka.structs import OffsetAndMetadata
    try:
        return OffsetAndMetadata(offset, "", -1)
    except TypeError:
        return OffsetAndMetadata(offset, "")


def test_kafka_topic_and_consumer_group_lag(ui, broker, http):
    assert http.put("/api/kafka/topics/%2F/ui-orders", {"partitions": 2}).status_code == 201
    p = KafkaProducer(bootstrap_servers=broker.kafka_bootstrap)
    for i in range(10):
        p.send("ui-orders", b"o%d" % i, partition=i % 2)
    p.flush()
    c = KafkaConsumer(bootstrap_servers=broker.kafka_bootstrap, group_id="ui-billing",
                      client_id="ui-billing-1", enable_auto_commit=False,
                      auto_offset_reset="earliest")
    try:
        c.subscribe(["ui-orders"])
        seen, deadline = 0, time.monotonic() + 20
        while seen < 10 and time.monotonic() < deadline:
            for recs in c.poll(timeout_ms=500).values():
                seen += len(recs)
        assert seen == 10
        c.commit({TopicPartition("ui-orders", 0): _commit(2), TopicPartition("ui-orders", 1): _commit(5)})
        ui.logged_in()
        ui.go("/topics")
        ui.wait(lambda: (r := ui.row("#list-topics", "ui-orders")) and " 10 " in f" {r.text} ",
                what="topic listed with 10 messages")
        ui.click_in_row("#list-topics", "ui-orders", link="ui-orders")
        ui.wait_text("#t-body", lambda t: "Log end offset" in t)
        ui.go("/groups")
        ui.wait(lambda: (r := ui.row("#list-groups", "ui-billing")) and r.find_element(By.CSS_SELECTOR, "td.lag").text == "3",
                what="group listed with lag 3")
        ui.click_in_row("#list-groups", "ui-billing", link="ui-billing")
        ui.wait_text("#g-card-lag", lambda t: t == "3")
        ui.wait_text("#g-card-state", lambda t: t == "Stable")
        ui.wait_text("#g-members", lambda t: "ui-billing-1" in t)
        lags = [e.text for e in ui.d.find_elements(By.CSS_SELECTOR, "#g-offsets td.lag")]
        assert lags == ["3", "0"]
        # More records raise the lag; the page follows (refresh every 5 s) and charts it.
        for i in range(4):
            p.send("ui-orders", b"late", partition=1)
        p.flush()
        ui.wait_text("#g-card-lag", lambda t: t == "7", timeout=20)
        ui.el("#g-chart svg polyline")
    finally:
        c.close()
        p.close()


def test_many_queues_paged_and_filtered(ui, amqp):
    ch = amqp().channel()
    for i in range(1200):
        ch.queue_declare(f"many-{i:04d}")
    ui.logged_in()
    ui.d.execute_script("performance.clearResourceTimings()")
    ui.go("/queues")
    ui.wait_text("#list-queues .pageinfo", lambda t: "page 1 of" in t)
    total = int(ui.el("#list-queues").get_attribute("data-total"))
    assert total >= 1200
    assert len(ui.d.find_elements(By.CSS_SELECTOR, "#list-queues tbody tr")) == 50
    # Substring filter, then a regex, then the next page.
    ui.fill("#list-queues .filter", "many-07")
    ui.wait_text("#list-queues .pageinfo", lambda t: "page 1 of 2 · 100 shown" in t)
    ui.el("#list-queues .regex").click()
    ui.fill("#list-queues .filter", "^many-00(1|2)[0-4]$")
    ui.wait_text("#list-queues .pageinfo", lambda t: "page 1 of 1 · 10 shown" in t)
    names = [r.find_elements(By.TAG_NAME, "td")[1].text for r in ui.d.find_elements(By.CSS_SELECTOR, "#list-queues tbody tr")]
    assert names == [f"many-00{a}{b}" for a in (1, 2) for b in range(5)]
    ui.el("#list-queues .regex").click()
    ui.fill("#list-queues .filter", "many-")
    ui.wait_text("#list-queues .pageinfo", lambda t: "page 1 of 24 · 1,200 shown" in t)
    ui.d.find_element(By.CSS_SELECTOR, "#list-queues .pager button[data-page='2']").click()
    ui.wait_text("#list-queues .pageinfo", lambda t: t.startswith("page 2 of 24"))
    ui.wait(lambda: ui.row("#list-queues", "many-0050"), what="second page")
    # Sorting is server-side too: by name descending.
    ui.d.find_element(By.CSS_SELECTOR, "#list-queues th[data-sort='name']").click()
    ui.wait(lambda: ui.row("#list-queues", "many-1149"), what="descending page 2")
    # The browser never asked for the whole list.
    urls = ui.d.execute_script(
        "return performance.getEntriesByType('resource').map(e => e.name).filter(n => n.includes('/api/queues'))")
    assert urls and all("page=" in u and "page_size=" in u for u in urls), urls
