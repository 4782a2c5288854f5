#!/usr/bin/env python3
# Cost of making N files durable on the disk under the data dir, per strategy: one fdatasync
# per file one after the other, N concurrent fdatasyncs (N threads, 8 threads), one syncfs.
# Each round appends 4 KiB to each of 100 files first.   python3 bench/fsync-strategies.py [ROUNDS] [DIR]
import os, time, ctypes, threading, sys
from concurrent.futures import ThreadPoolExecutor
libc = ctypes.CDLL("libc.so.6", use_errno=True)
N = 100; ROUNDS = int(sys.argv[1]) if len(sys.argv) > 1 else 30
d = sys.argv[2] if len(sys.argv) > 2 else "/var/tmp/ferrymq-fsync-strategies"; os.makedirs(d, exist_ok=True)
fds = [os.open(f"{d}/f{i}", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644) for i in range(N)]
rec = b"x" * 4096  # a round's appends per queue (e.g. ~40 msgs)
def append():
    for fd in fds: os.write(fd, rec)
def serial():
    for fd in fds: os.fdatasync(fd)
pool = ThreadPoolExecutor(N)
def parallel():
    list(pool.map(os.fdatasync, fds))
pool8 = ThreadPoolExecutor(8)
def par8():
    list(pool8.map(os.fdatasync, fds))
def syncfs():
    assert libc.syncfs(fds[0]) == 0
def one():
    os.fdatasync(fds[0])
for name, f in [("one file fdatasync", one), ("serial 100 fdatasync", serial), ("100 threads fdatasync", parallel), ("8 threads fdatasync", par8), ("syncfs", syncfs), ("serial 100 fdatasync", serial), ("100 threads fdatasync", parallel), ("syncfs", syncfs)]:
    ts = []
    for _ in range(ROUNDS):
        append(); t = time.perf_counter(); f(); ts.append(time.perf_counter() - t)
    ts.sort()
    print(f"{name:<24} p50 {ts[len(ts)//2]*1000:7.2f} ms  mean {sum(ts)/len(ts)*1000:7.2f} ms  max {ts[-1]*1000:7.2f} ms")
for fd in fds: os.close(fd)
import shutil; shutil.rmtree(d)
