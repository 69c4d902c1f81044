#!/usr/bin/env python3
"""Where a kernel's instructions and stalls go, from Nsight Compute's per-SASS table.

    ncu ... --section SourceCounters --import-source yes -o rep <program>
    ncu -i rep.ncu-rep --page source --csv --print-source sass > rep.csv
    python3 bench/cuda/ncu-source.py rep.csv [--list N]

Instructions executed the same number of times form one region (a loop body runs its
count, the code once per warp another); for the largest regions it prints their share of
the instructions and of the warp-stall samples, the top stall reasons and the opcode mix.
--list N also prints the SASS of the N-th largest region with each line's samples."""
import csv
import sys
from collections import Counter, defaultdict


def main():
    args = sys.argv[1:]
    if not args:
        sys.exit(__doc__)
    show = int(args[args.index("--list") + 1]) if "--list" in args else 0
    rows = list(csv.reader(open(args[0])))
    hdr = next(r for r in rows if "Source" in r and "Instructions Executed" in r)
    data = [r for r in rows[rows.index(hdr) + 1:] if len(r) == len(hdr)]
    col = {h: i for i, h in enumerate(hdr)}
    stalls = [h for h in hdr if h.startswith("stall_") and "Not Issued" not in h]
    regions = defaultdict(list)
    for r in data:
        n = int(r[col["Instructions Executed"]] or 0)
        if n:
            regions[n].append(r)
    total = sum(n * len(rs) for n, rs in regions.items())
    samples = sum(int(r[col["Warp Stall Sampling (All Samples)"]] or 0) for r in data)
    print(f"{total} warp instructions, {samples} stall samples")
    ranked = sorted(regions.items(), key=lambda kv: -kv[0] * len(kv[1]))
    for i, (n, rs) in enumerate(ranked[:8], 1):
        smp = sum(int(r[col["Warp Stall Sampling (All Samples)"]] or 0) for r in rs)
        why = Counter()
        ops = Counter()
        for r in rs:
            for s in stalls:
                why[s[6:]] += int(r[col[s]] or 0)
            op = r[col["Source"]].split()
            op = op[1] if op[0].startswith("@") else op[0]
            ops[op.split(".")[0]] += 1
        print(f"{i}. {len(rs)} instructions x {n}: {n * len(rs) / total:.0%} of instructions, "
              f"{smp / max(samples, 1):.0%} of samples; stalls {', '.join(f'{k} {v}' for k, v in why.most_common(5))}")
        print("   " + ", ".join(f"{k} {v}" for k, v in ops.most_common(12)))
        if i == show:
            for r in rs:
                print(f"   {r[col['Warp Stall Sampling (All Samples)']]:>5}  {r[col['Source']].strip()}")


if __name__ == "__main__":
    main()
