#!/usr/bin/env python3
"""Corpus minimisation as afl-cmin does it, over `afl-showmap -i DIR -o MAPS` (batch mode,
which works with afl.rs's persistent targets where afl-cmin's own probe does not): for
every coverage tuple keep the smallest input that hits it; the union is the corpus.

    fuzz/cmin.py TARGET_BINARY INPUT_DIR... -o CORPUS_DIR

Inputs are named by the SHA-1 of their content; CORPUS_DIR is replaced.
"""
import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("binary")
    ap.add_argument("inputs", nargs="+")
    ap.add_argument("-o", "--out", required=True)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        pool = Path(tmp, "in")
        pool.mkdir()
        for d in a.inputs:
            for f in Path(d).iterdir():
                if f.is_file():
                    data = f.read_bytes()
                    (pool / hashlib.sha1(data).hexdigest()).write_bytes(data)
        maps = Path(tmp, "maps")
        subprocess.run(["cargo", "afl", "showmap", "-q", "-i", str(pool), "-o", str(maps),
                        "-t", "1000", "--", a.binary], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        best: dict[str, tuple[int, str]] = {}
        for m in maps.iterdir():
            size = (pool / m.name).stat().st_size
            for line in m.read_text().split():
                t = line  # tuple:hit-count bucket, as afl-cmin counts them
                if t not in best or (size, m.name) < best[t]:
                    best[t] = (size, m.name)
        keep = sorted({name for _, name in best.values()})
        if not keep:
            print(f"{a.binary}: no coverage recorded; corpus left as it was", file=sys.stderr)
            return 1
        out = Path(a.out)
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir(parents=True)
        for name in keep:
            shutil.copy(pool / name, out / name)
        print(f"{len(keep)} inputs cover {len(best)} tuples "
              f"(from {sum(1 for _ in pool.iterdir())})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
