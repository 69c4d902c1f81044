#!/usr/bin/env python3
"""awq-trace.py < LOG: the tensor-core AWQ GEMV's phase clocks, per launch shape.

LOG is the output of a run built with LOOM_OPENCL_BUILD_OPTIONS=-DAWQ_TRACE (NVIDIA),
whose every 37th work-group prints one `awqtr` line: K, the launch's columns, its
work-group, %globaltimer at its start and end, and clock64 cycles spent staging x, in
the loop over its groups, and in the sums and epilogue. Prints per (K, N) the medians,
the work-group's life in ns, and per launch (lines of one shape close in time) the
span from the first sampled start to the last end and the spread of the starts
(which shows the waves of work-groups)."""
import collections
import re
import statistics as st
import sys

PAT = re.compile(r"awqtr K (\d+) N (\d+) wg (\d+) gt0 (\d+) gt1 (\d+) stage (\d+) loop (\d+) red (\d+)")


def main():
    rows = sorted((tuple(int(v) for v in m.groups()) for m in map(PAT.search, sys.stdin) if m), key=lambda r: r[3])
    by, launches, cur = collections.defaultdict(list), collections.defaultdict(list), []
    for r in rows + [None]:
        # a launch: consecutive lines of one shape starting within 200 us of its first
        if cur and (r is None or r[:2] != cur[0][:2] or r[3] - cur[0][3] > 200000):
            launches[cur[0][:2]].append((max(c[4] for c in cur) - min(c[3] for c in cur),
                                         max(c[3] for c in cur) - min(c[3] for c in cur)))
            cur = []
        if r is not None:
            by[r[:2]].append(r)
            cur.append(r)
    for (k, n), v in sorted(by.items()):
        med = lambda i: st.median(r[i] for r in v)
        print(f"K {k} N {n}: {len(v)} work-groups; cycles: stage {med(5):.0f} loop {med(6):.0f} sums {med(7):.0f}; "
              f"life {st.median(r[4] - r[3] for r in v):.0f} ns; launch span {st.median(a for a, _ in launches[(k, n)]):.0f} ns, "
              f"starts spread {st.median(b for _, b in launches[(k, n)]):.0f} ns")


if __name__ == "__main__":
    main()
