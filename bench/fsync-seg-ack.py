#!/usr/bin/env python3
# Cost of one round of fdatasyncs for 100 durable queues on the disk under /var/tmp: 100 segment
# files only, segment + ack file per queue (200 files), on 8 or 32 threads, and one shared
# file holding everything (what a shared write-ahead log would fsync).  python3 bench/fsync-seg-ack.py
import os, time, sys
from concurrent.futures import ThreadPoolExecutor
d="/var/tmp/fo-fs"; os.makedirs(d, exist_ok=True)
R=15
def mk(n,p): return [os.open(f"{d}/{p}{i}", os.O_WRONLY|os.O_CREAT|os.O_TRUNC,0o644) for i in range(n)]
seg=mk(100,"s"); ack=mk(100,"a"); wal=mk(1,"w")
pool8=ThreadPoolExecutor(8); pool32=ThreadPoolExecutor(32)
def run(name, files, sizes, pool):
    ts=[]
    for _ in range(R):
        for fd,sz in zip(files,sizes): os.write(fd,b"x"*sz)
        t=time.perf_counter()
        if pool: list(pool.map(os.fdatasync, files))
        else: [os.fdatasync(f) for f in files]
        ts.append(time.perf_counter()-t)
    ts.sort(); print(f"{name:<40} p50 {ts[R//2]*1000:7.2f} ms mean {sum(ts)/R*1000:7.2f} ms max {ts[-1]*1000:7.2f}",flush=True)
for _ in range(2):
  run("8 thr: 100 seg (2KiB each)", seg, [2048]*100, pool8)
  run("8 thr: 100 seg + 100 ack (2KiB+64B)", seg+ack, [2048]*100+[64]*100, pool8)
  run("32 thr: 100 seg + 100 ack", seg+ack, [2048]*100+[64]*100, pool32)
  run("1 wal file (200KiB) one fdatasync", wal, [204800], None)
import shutil; shutil.rmtree(d)
