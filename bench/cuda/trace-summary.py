#!/usr/bin/env python3
"""trace-summary.py TRACE.csv: the decode steps of a bench/cuda/trace.c recording, as the GPU ran them.

A decode step ends with the copy of its logits to the host (the largest device-to-host copy of
the run's last steps). Per step: its period (one logits copy's end to the next one's), the time
from the last copy's end to the step's first kernel (the host's turn: its copy on to the caller,
the next launch), the kernels' span and inside it the time no kernel ran, then the time to the
logits copy's start and the copy. Per kernel, named with the kernel before
it (o and down share one template): the mean time it adds to the step, from the later of its
start and the previous kernel's end to its own end (a kernel launched early under programmatic
dependent launch waits inside its span; that wait is not its cost), and the idle time before it."""
import collections
import re
import sys


def short(name):
    m = re.match(r"_Z\d+(\w+?)I(.*)Ev", name)
    if not m:
        return re.sub(r"^_Z\d+", "", name)[:40]
    args = re.findall(r"Li(\d+)E|\d*(__half|float)", m.group(2))
    return "%s<%s>" % (m.group(1), ",".join(a or b for a, b in args))


def main():
    recs = []
    for line in open(sys.argv[1]):
        kind, s, e, what = line.rstrip("\n").split(",", 3)
        recs.append((int(s), int(e), kind, what))
    recs.sort()
    d2h = [(s, e, int(w.split()[1])) for s, e, k, w in recs if k == "C" and w.split()[0] == "2"]
    if not d2h:
        sys.exit("no device-to-host copies in the trace")
    big = max(b for _, _, b in d2h[-8:])
    logits = [(s, e) for s, e, b in d2h if b == big]
    steps = [(p[1], c[0], c[1]) for p, c in zip(logits, logits[1:])][-32:]  # the last steps: decode
    per, host, span, idle, tail, copy = [], [], [], [], [], []
    cost, gap, cnt = collections.Counter(), collections.Counter(), collections.Counter()
    for a, cs, b in steps:
        ks = [(s, e, w) for s, e, k, w in recs if k == "K" and a <= s < cs]
        if not ks:
            continue
        per.append(b - a)
        host.append(ks[0][0] - a)
        span.append(max(e for _, e, _ in ks) - ks[0][0])
        tail.append(cs - max(e for _, e, _ in ks))
        copy.append(b - cs)
        prev_end, prev, busy_idle = ks[0][0], "(step start)", 0
        for s, e, w in ks:
            name = short(w)
            key = "%s after %s" % (name, prev)
            cost[key] += max(0, e - max(s, prev_end))
            g = max(0, s - prev_end)
            gap[key] += g
            busy_idle += g
            cnt[key] += 1
            prev_end, prev = max(prev_end, e), name
        idle.append(busy_idle)
    n = len(per)
    if not n:
        sys.exit("no decode steps found")
    us = lambda v: sum(v) / len(v) / 1e3
    print("%d decode steps: %.1f us a step = %.1f us from the last logits copy to the first kernel + %.1f us of "
          "kernels (of it %.1f us with none running) + %.1f us to the logits copy + %.1f us copying" %
          (n, us(per), us(host), us(span), us(idle), us(tail), us(copy)))
    print("  per step  adds (us)  idle before (us)  kernel")
    for key, c in sorted(cost.items(), key=lambda kv: -kv[1]):
        print("  %5.1f x  %8.2f  %8.2f          %s" % (cnt[key] / n, c / cnt[key] / 1e3, gap[key] / cnt[key] / 1e3, key))


if __name__ == "__main__":
    main()
