#!/usr/bin/env python3
"""Where a decode step's time goes, from an nsys GPU trace (one row per kernel or copy):
   nsys stats --report cuda_gpu_trace --format csv REPORT.nsys-rep > trace.csv
   python3 bench/cuda/nsys-steps.py trace.csv [first-kernel-substring]
Steps start at each launch of the first kernel of a step (default: the embedding's). Each
kernel is charged from the later of its start and the previous item's end to its own end,
so overlap under programmatic dependent launch is not counted twice; what no item covers is
idle (the host's turn: reading the logits back, launching the next step)."""
import csv
import re
import sys
from collections import defaultdict

path = sys.argv[1]
first = sys.argv[2] if len(sys.argv) > 2 else "embed"
rows = [r for r in csv.reader(open(path)) if r]
hdr_i = next(i for i, r in enumerate(rows) if any(c.startswith("Start") for c in r))
hdr = rows[hdr_i]
col = lambda pre: next(i for i, c in enumerate(hdr) if c.startswith(pre))
S, D, N = col("Start"), col("Duration"), col("Name")
items = sorted((int(float(r[S])), int(float(r[D])), r[N]) for r in rows[hdr_i + 1:] if len(r) > N and r[S])

EPI = {"0": "awq gemv q/k/v (+rope, kv store)", "1": "awq gemv gate/up + swiglu", "2": "awq gemv o|down + add (+norm)"}


def short(name):
    m = re.search(r"awq_gemv_kernel<\(?(?:int\))?(\d)", name)
    if m:
        return EPI.get(m.group(1), name[:60])
    name = re.sub(r"^void ", "", name)
    depth = 0
    for i in range(len(name) - 1, -1, -1):  # drop the argument list: the final (...)
        depth += {")": 1, "(": -1}.get(name[i], 0)
        if depth == 0:
            name = name[:i] if name.endswith(")") else name
            break
    return name[:60]

starts = [i for i, it in enumerate(items) if first in it[2]]
if len(starts) < 3:
    sys.exit(f"fewer than 3 steps start with a kernel named *{first}*")
# the decode steps: the last run of steps with the same number of items
counts = [starts[k + 1] - starts[k] for k in range(len(starts) - 1)]
n_items = counts[-1]
k0 = len(counts) - 1
while k0 > 0 and counts[k0 - 1] == n_items:
    k0 -= 1
steps = [(starts[k], starts[k + 1]) for k in range(k0, len(counts))]
charge, wall, idle = defaultdict(float), 0.0, 0.0
for a, b in steps:
    t_end = items[a][0]
    for s, d, name in items[a:b]:
        idle += max(0, s - t_end)
        charge[short(name)] += max(0, s + d - max(s, t_end))
        t_end = max(t_end, s + d)
    wall += items[b][0] - items[a][0]
    idle += items[b][0] - t_end
n = len(steps)
print(f"{n} steps of {n_items} items: {wall / n / 1e3:.1f} us a step; idle {idle / n / 1e3:.1f} us")
for name, t in sorted(charge.items(), key=lambda kv: -kv[1]):
    print(f"  {t / n / 1e3:9.1f} us  {100 * t / wall:5.1f}%  {name}")
