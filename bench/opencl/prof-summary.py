#!/usr/bin/env python3
"""Sums a LOOM_OPENCL_PROFILE=1 log (stdin) per (op, node name with the layer
numbers dropped): the device time of its kernels and the device's idle time
before them, over the profiled steps of argv[1] rows; then the last steps.
With --kernels (a log made at LOOM_LOG=debug) per kernel of those nodes too."""
import collections
import re
import sys

rows = sys.argv[1]
kernels = "--kernels" in sys.argv[2:]
t, idle, c, steps = collections.Counter(), collections.Counter(), collections.Counter(), []
kt, kc, pending = collections.Counter(), collections.Counter(), []
for line in sys.stdin:
    m = re.search(r"opencl: node \d+ kernel (\w+): ([\d.]+) ms", line)
    if m:  # logged before its node's line, which says the rows
        pending.append((m[1], float(m[2])))
        continue
    m = re.search(r"opencl: node \d+ \((\w+) .(\S*)., (\d+) rows\): ([\d.]+) ms, idle before ([\d.]+) ms", line)
    if m:
        if m[3] == rows:
            k = m[1] + " " + re.sub(r"\d+", "#", m[2])
            t[k] += float(m[4])
            idle[k] += float(m[5])
            c[k] += 1
            for name, ms in pending:
                kt[k + " / " + name] += ms
                kc[k + " / " + name] += 1
        pending = []
    m = re.search(r"step of (\d+) tokens: ([\d.]+) ms on the device, ([\d.]+) ms in (\d+) kernels, ([\d.]+) ms idle"
                  r"(?:.*; ([\d.]+) ms on the host)?", line)
    if m and m[1] == rows:
        steps.append((float(m[2]), float(m[3]), int(m[4]), float(m[5]), float(m[6] or "nan")))
total = sum(t.values()) or 1
n = max(len(steps), 1)
print(f"   kernels  share  idle before  nodes  op name   (us per step: {len(steps)} steps)")
for k, v in t.most_common(20):
    print(f"{v:7.3f} ms {100 * v / total:5.1f}% {idle[k]:8.3f} ms {c[k]:6d}  {k}  ({1000 * v / n / max(c[k] // n, 1):.1f} us a node)")
if kernels:
    for k, v in kt.most_common(30):
        print(f"  kernel {k}: {1000 * v / max(kc[k], 1):.1f} us a launch ({kc[k]} launches)")
for s in steps[-3:]:
    print(f"step: {s[0]:.3f} ms on the device, {s[1]:.3f} ms in {s[2]} kernels, {s[3]:.3f} ms idle, "
          f"{s[4]:.3f} ms enqueueing on the host")
