"""Kafka consumer groups end to end against the real ferrymq binary, with confluent-kafka
(librdkafka) and kafka-python: three members on a six-partition topic rebalancing as one
leaves, every record consumed, committed offsets at the end of every partition, the offsets
surviving a broker restart, and the admin calls (list, describe, delete) of both clients.

Usage: python groups_e2e.py path/to/ferrymq
"""

import shutil
import subprocess
import sys
import tempfile
import threading
import time

from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

BIN = sys.argv[1] if len(sys.argv) > 1 else "target/release/ferrymq"
TOPIC = "events"
PARTITIONS = 6


def start_broker(data_dir):
    proc = subprocess.Popen(
        [BIN, "serve", "--data-dir", data_dir, "--amqp-port", "0", "--kafka-port", "0",
         "--http-port", "0", "--prometheus-port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    deadline = time.time() + 30
    while time.time() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        if line.startswith("ferrymq: kafka listening on"):
            port = int(line.strip().rsplit(":", 1)[1])
            threading.Thread(target=proc.stdout.read, daemon=True).start()
            return proc, "127.0.0.1:%d" % port
    proc.kill()
    raise RuntimeError("broker did not start")


def stop_broker(proc):
    proc.terminate()
    proc.wait(timeout=20)


def produce(bootstrap, start, count):
    p = Producer({"bootstrap.servers": bootstrap, "acks": "all"})
    for i in range(start, start + count):
        p.produce(TOPIC, key=b"k%d" % i, value=b"%d" % i)
    assert p.flush(30) == 0, "unflushed records"
    del p


def committed(bootstrap, group):
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    got = c.committed([TopicPartition(TOPIC, p) for p in range(PARTITIONS)], timeout=20)
    c.close()
    return {tp.partition: tp.offset for tp in got}


def watermarks(bootstrap):
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "wm"})
    hw = {p: c.get_watermark_offsets(TopicPartition(TOPIC, p), timeout=20)[1]
          for p in range(PARTITIONS)}
    c.close()
    return hw


class Member(threading.Thread):
    """A consumer that commits each record synchronously before taking the next."""

    def __init__(self, bootstrap, group, name, seen, lock, instance=None):
        super().__init__(daemon=True)
        self.stop = threading.Event()
        self.name_ = name
        self.seen = seen
        self.lock = lock
        self.assignments = []
        self.commit_errors = 0
        conf = {
            "bootstrap.servers": bootstrap, "group.id": group,
            "client.id": name,
            "auto.offset.reset": "earliest", "enable.auto.commit": False,
            "session.timeout.ms": 6000, "heartbeat.interval.ms": 500,
        }
        if instance:
            conf["group.instance.id"] = instance
        self.c = Consumer(conf)

    def run(self):
        def on_assign(consumer, parts):
            self.assignments.append(sorted(p.partition for p in parts))
        self.c.subscribe([TOPIC], on_assign=on_assign)
        while not self.stop.is_set():
            m = self.c.poll(0.2)
            if m is None:
                continue
            if m.error():
                if m.error().code() != KafkaError._PARTITION_EOF:
                    print(self.name_, "error", m.error())
                continue
            try:
                self.c.commit(message=m, asynchronous=False)
            except Exception as e:  # a commit refused during a rebalance
                self.commit_errors += 1
                print(self.name_, "commit failed:", e)
                continue
            with self.lock:
                self.seen.append(int(m.value()))
        self.c.close()


def wait_for(cond, timeout, what):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if cond():
            return
        time.sleep(0.2)
    raise AssertionError("timed out waiting for " + what)


def confluent_group(bootstrap):
    admin = AdminClient({"bootstrap.servers": bootstrap})
    fs = admin.create_topics([NewTopic(TOPIC, num_partitions=PARTITIONS, replication_factor=1)])
    fs[TOPIC].result(timeout=20)
    produce(bootstrap, 0, 600)

    seen, lock = [], threading.Lock()
    members = [Member(bootstrap, "g1", "m%d" % i, seen, lock) for i in range(3)]
    for m in members:
        m.start()
    wait_for(lambda: all(m.assignments and len(m.assignments[-1]) == 2 for m in members),
             60, "three members with two partitions each")
    print("assignments:", [m.assignments[-1] for m in members])
    wait_for(lambda: len(seen) >= 600, 60, "600 records")

    # One member leaves; the two others take over its partitions.
    members[2].stop.set()
    members[2].join(30)
    wait_for(lambda: all(len(m.assignments[-1]) == 3 for m in members[:2]),
             60, "two members with three partitions each")
    print("after leave:", [m.assignments[-1] for m in members[:2]])
    produce(bootstrap, 600, 600)
    wait_for(lambda: len(set(seen)) >= 1200, 60, "1200 records")
    for m in members[:2]:
        m.stop.set()
        m.join(30)

    missing = set(range(1200)) - set(seen)
    dups = len(seen) - len(set(seen))
    assert not missing, "lost records: %s" % sorted(missing)[:20]
    assert dups == 0, "%d records consumed twice" % dups
    assert committed(bootstrap, "g1") == watermarks(bootstrap), \
        (committed(bootstrap, "g1"), watermarks(bootstrap))
    print("confluent-kafka group: 1200 records, no loss, no duplicate, commits at the end")


def resume_after_restart(bootstrap):
    before = committed(bootstrap, "g1")
    assert sum(before.values()) == 1200, before
    produce(bootstrap, 1200, 10)
    seen, lock = [], threading.Lock()
    m = Member(bootstrap, "g1", "again", seen, lock)
    m.start()
    try:
        wait_for(lambda: len(seen) >= 10, 60, "the 10 new records")
    except AssertionError:
        print("assignments", m.assignments, "seen", seen, "commit errors", m.commit_errors)
        print("committed", committed(bootstrap, "g1"), "watermarks", watermarks(bootstrap))
        raise
    time.sleep(1)
    m.stop.set()
    m.join(30)
    assert sorted(seen) == list(range(1200, 1210)), sorted(seen)
    print("after restart: resumed at the committed offsets, 10 new records only")


def kafka_python_admin(bootstrap):
    from kafka import KafkaAdminClient, KafkaConsumer

    # One thread per consumer, as kafka-python is used (one thread polling two consumers
    # with short timeouts makes kafka-python abandon its own SyncGroup and rejoin forever).
    consumers = [KafkaConsumer(TOPIC, bootstrap_servers=bootstrap, group_id="g2",
                               auto_offset_reset="earliest", enable_auto_commit=False)
                 for _ in range(2)]
    counts = [0, 0]
    done = threading.Event()

    def consume(i, c):
        while not done.is_set():
            batch = c.poll(timeout_ms=1000)
            for recs in batch.values():
                counts[i] += len(recs)
            if batch:
                c.commit()

    threads = [threading.Thread(target=consume, args=(i, c), daemon=True)
               for i, c in enumerate(consumers)]
    for t in threads:
        t.start()
    wait_for(lambda: sum(counts) >= 1210, 60, "kafka-python consumers: %s" % counts)
    time.sleep(2)
    done.set()
    for t in threads:
        t.join(10)
    assert sum(counts) == 1210 and all(counts), counts
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    listed = {g["group_id"]: g for g in admin.list_groups()}
    assert listed["g2"]["group_state"] == "Stable", listed
    assert listed["g2"]["protocol_type"] == "consumer", listed
    assert listed["g1"]["group_state"] == "Empty", listed
    stable = admin.list_groups(states_filter=["Stable"])
    assert [g["group_id"] for g in stable] == ["g2"], stable
    desc = admin.describe_groups(["g2"])["g2"]
    assert desc["group_state"] == "Stable" and desc["protocol_data"] == "range", desc
    assert len(desc["members"]) == 2, desc
    parts = sorted(p for m in desc["members"]
                   for a in m["member_assignment"]["assigned_partitions"]
                   for p in a["partitions"])
    assert parts == list(range(PARTITIONS)), desc
    assert all(m["client_id"].startswith("kafka-python") for m in desc["members"]), desc
    offsets = admin.list_group_offsets({"g2": None})["g2"]
    assert sum(o.offset for o in offsets.values()) == 1210, offsets
    res = admin.delete_groups(["g2"])
    assert res == {"g2": "NonEmptyGroupError"}, res
    for c in consumers:
        c.close()
    res = admin.delete_groups(["g2"])
    assert res == {"g2": "OK"}, res
    assert "g2" not in {g["group_id"] for g in admin.list_groups()}
    assert admin.list_group_offsets({"g2": None})["g2"] == {}
    res = admin.delete_groups(["never-existed"])
    assert res == {"never-existed": "GroupIdNotFoundError"}, res
    print("kafka-python: group of two consumed 1210; list (with states filter), describe,")
    print("  offsets, delete (NON_EMPTY_GROUP, then OK, then GROUP_ID_NOT_FOUND) ok")


def static_membership(bootstrap):
    """KIP-345: a static member that restarts within its session timeout gets its
    partitions back without a rebalance of the others."""
    seen, lock = [], threading.Lock()
    a = Member(bootstrap, "g3", "a", seen, lock, instance="inst-a")
    b = Member(bootstrap, "g3", "b", seen, lock, instance="inst-b")
    a.start()
    b.start()
    wait_for(lambda: a.assignments and b.assignments
             and len(a.assignments[-1]) == 3 and len(b.assignments[-1]) == 3,
             60, "two static members with three partitions each")
    before_b = list(b.assignments)
    mine = a.assignments[-1]
    a.stop.set()  # a static member's close sends no LeaveGroup
    a.join(30)
    a2 = Member(bootstrap, "g3", "a2", seen, lock, instance="inst-a")
    a2.start()
    wait_for(lambda: a2.assignments, 30, "the restarted static member's assignment")
    time.sleep(3)
    assert a2.assignments[-1] == mine, (a2.assignments, mine)
    assert b.assignments == before_b, ("the other member was rebalanced", b.assignments)
    for m in (a2, b):
        m.stop.set()
        m.join(30)
    print("static membership: restarted member got", mine, "back, no rebalance of the other")


def kcat_group(bootstrap):
    """kcat (Debian's librdkafka 2.0.2) as a balanced consumer: consume, commit, resume."""
    if not shutil.which("kcat"):
        print("kcat not installed: skipped")
        return
    def produce_lines(lines):
        subprocess.run(["kcat", "-P", "-b", bootstrap, "-t", "kc"], input="\n".join(lines) + "\n",
                       text=True, check=True, timeout=30)
    def consume():
        out = subprocess.run(["kcat", "-b", bootstrap, "-G", "kgroup", "-X",
                              "auto.offset.reset=earliest", "-e", "kc"],
                             capture_output=True, text=True, timeout=60)
        return out.stdout.split()
    produce_lines(["r%d" % i for i in range(30)])
    first = consume()
    assert sorted(first) == sorted("r%d" % i for i in range(30)), first
    produce_lines(["r%d" % i for i in range(30, 35)])
    second = consume()
    assert second == ["r%d" % i for i in range(30, 35)], second
    print("kcat: balanced consumer consumed 30, committed, resumed with the 5 new only")


def main():
    data = tempfile.mkdtemp()
    proc, bootstrap = start_broker(data)
    try:
        confluent_group(bootstrap)
    finally:
        stop_broker(proc)
    proc, bootstrap = start_broker(data)
    try:
        resume_after_restart(bootstrap)
        kafka_python_admin(bootstrap)
        static_membership(bootstrap)
        kcat_group(bootstrap)
    finally:
        stop_broker(proc)
    print("OK")


if __name__ == "__main__":
    main()
