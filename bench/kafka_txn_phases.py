"""Where a transaction's time goes, client side (confluent-kafka): per transaction of 100
records of 100 B, the medians of begin+produce(), flush() (AddPartitionsToTxn + Produce) and
commit_transaction() (EndTxn alone, records already flushed).

    python bench/kafka_txn_phases.py BOOTSTRAP LINGER_MS

Run against a broker started by hand (e.g. with --fsync always, then --fsync never, to see
what the fsyncs cost). Figures: bench/results/2026-12-07-kafka-txn-3.txt."""
import sys, time, uuid, statistics
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic
BOOT=sys.argv[1]; linger=int(sys.argv[2])
name=f"ph.{uuid.uuid4().hex[:8]}"
adm=AdminClient({"bootstrap.servers":BOOT}); adm.create_topics([NewTopic(name,1,1)])[name].result(30); time.sleep(0.3)
p=Producer({"bootstrap.servers":BOOT,"transactional.id":"ph-"+uuid.uuid4().hex,"linger.ms":linger,"batch.num.messages":10000})
p.init_transactions(30)
P=[];F=[];C=[];T=[]
for i in range(500):
    t0=time.perf_counter(); p.begin_transaction()
    for _ in range(100): p.produce(name,b"x"*100)
    t1=time.perf_counter(); p.flush(30); t2=time.perf_counter(); p.commit_transaction(30); t3=time.perf_counter()
    P.append(t1-t0);F.append(t2-t1);C.append(t3-t2);T.append(t3-t0)
m=lambda xs: statistics.median(xs)*1e3
print(f"linger={linger} produce {m(P):.2f} flush {m(F):.2f} commit {m(C):.2f} total {m(T):.2f} ms -> {100/statistics.mean(T):,.0f} rec/s")
