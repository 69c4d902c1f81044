#!/usr/bin/env bash
# device-check.sh — build loom with the CUDA backend on a GPU machine and check it:
#   1. build (meson + ninja, -Dcuda=enabled, tests off) in a scratch copy of the tree
#   2. loom backends
#   3. loom check ops --backend cuda (every op, dtype and Qwen2.5 shape vs float64)
#   4. logits vs the CPU backend on synthetic Qwen2.5-0.5B checkpoints (AWQ and
#      bf16, 4 layers): a 5-token step (GEMV, split attention, CUDA graph) and a
#      40-token prefill (tensor-core GEMM, tiled attention); NMSE, max |diff|, top-1
#   5. loom check model (reference vs cpu vs cuda, greedy decode) when present
#   6. decode timing: loom bench model, CUDA graphs on and off
# Usage, from the repository root: bash backends/cuda/device-check.sh [OUTDIR]
# (OUTDIR defaults to $OUT when set, else /tmp/loom-cuda-out). Set QUICK=1 to
# skip steps 5 and 6. On the lent machine carry .deps (scripts/device-env.sh).
set -u
OUTDIR=${1:-${OUT:-/tmp/loom-cuda-out}}
mkdir -p "$OUTDIR"
export PATH=/usr/local/cuda/bin:$PATH
ROOT=$(pwd)
# the lent GPU machine has no -dev packages: unpack the ones carried in .deps/
# (run with carry [".deps"]; scripts/device-env.sh says how it is filled)
if ! pkg-config --exists libcjson 2>/dev/null && [ -d .deps ] && [ -f scripts/device-env.sh ]; then
    . scripts/device-env.sh
fi
SRC=/tmp/loom-cuda-src
W=/tmp/loom-cuda-work
rm -rf "$SRC" "$W" && mkdir -p "$SRC" "$W"
tar --exclude='./build*' --exclude='./.git' --exclude='./.whl' --exclude='./.gl' --exclude='./.deps' -cf - . | tar -xf - -C "$SRC"
# a backend folder another engineer has not given a meson.build yet would stop the configure
for b in "$SRC"/backends/*/; do [ -f "$b/meson.build" ] || { echo "(skipping unfinished $b)"; rm -rf "$b"; }; done
cd "$SRC" || exit 1

echo "== build"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader
t0=$(date +%s)
if ! meson setup build -Dtests=disabled -Dcuda=enabled -Dopencl=disabled -Dvulkan=disabled >"$OUTDIR/setup.log" 2>&1; then tail -30 "$OUTDIR/setup.log"; exit 1; fi
if ! ninja -C build >"$OUTDIR/build.log" 2>&1; then grep -E "error|FAILED" -A6 "$OUTDIR/build.log" | head -80; exit 1; fi
grep -E "warning" "$OUTDIR/build.log" | grep cuda | head -20
echo "built in $(( $(date +%s) - t0 )) s"
L=$SRC/build/tools/loom
export LOOM_BACKEND=

echo "== loom backends"
$L backends

echo "== loom check ops --backend cuda"
$L check ops --backend cuda --json "$OUTDIR/check_ops_cuda.json" >"$OUTDIR/check_ops_cuda.txt" 2>&1
echo "exit $?"
grep -E "FAIL|unsupported" "$OUTDIR/check_ops_cuda.txt" | head -40
tail -1 "$OUTDIR/check_ops_cuda.txt"

echo "== logits: cuda vs cpu"
cat >"$W/cmp.py" <<'EOF'
import json, sys
import numpy as np
cfg, a, b, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
V = json.load(open(cfg))["vocab_size"]
x = np.fromfile(a, dtype=np.float32).reshape(n, V).astype(np.float64)  # cuda
r = np.fromfile(b, dtype=np.float32).reshape(n, V).astype(np.float64)  # cpu
nmse = ((x - r) ** 2).sum() / (r ** 2).sum()
top1 = (x.argmax(1) == r.argmax(1)).mean()
def lsm(z): z = z - z.max(1, keepdims=True); return z - np.log(np.exp(z).sum(1, keepdims=True))
kl = (np.exp(lsm(r)) * (lsm(r) - lsm(x))).sum(1).mean()
print(f"  NMSE {nmse:.3e}  max|diff| {np.abs(x - r).max():.3e}  top-1 {top1 * 100:.1f}%  KL {kl:.2e}  finite {np.isfinite(x).all()}")
EOF
$L synth --preset qwen2.5-0.5b --awq --layers 4 --out "$W/m_awq" >/dev/null
$L synth --preset qwen2.5-0.5b --layers 4 --out "$W/m_bf16" >/dev/null
TOK5=$(python3 -c "print(','.join(str((i * 7919 + 11) % 151000) for i in range(5)))")
TOK40=$(python3 -c "print(','.join(str((i * 7919 + 11) % 151000) for i in range(40)))")
for m in m_awq m_bf16; do
    for n in 5 40; do
        [ $n = 5 ] && toks=$TOK5 || toks=$TOK40
        $L logits -m "$W/$m" --tokens "$toks" --out "$W/$m.$n.cpu" --backend cpu >/dev/null 2>&1 || echo "cpu logits failed"
        for g in 1 0; do
            if LOOM_CUDA_GRAPHS=$g $L logits -m "$W/$m" --tokens "$toks" --out "$W/$m.$n.cuda" --backend cuda 2>"$W/err"; then
                echo "$m, $n tokens, graphs=$g:"
                python3 "$W/cmp.py" "$W/$m/config.json" "$W/$m.$n.cuda" "$W/$m.$n.cpu" $n
            else
                echo "$m, $n tokens, graphs=$g: FAILED: $(cat "$W/err")"
            fi
        done
    done
done
[ "${QUICK:-0}" = 1 ] && exit 0

if $L check model --help 2>&1 | grep -q -- "-m DIR"; then
    echo "== loom check model (reference, cpu, cuda; greedy decode)"
    for m in m_awq m_bf16; do
        echo "-- $m"
        $L check model -m "$W/$m" --backends cpu,cuda --prompt-len 24 -n 16 2>&1 | tail -5
    done
fi

echo "== decode timing (loom bench model)"
$L synth --preset qwen2.5-0.5b --awq --out "$W/q05_awq" >/dev/null
for g in 1 0; do
    echo "-- Qwen2.5-0.5B AWQ (24 layers), LOOM_CUDA_GRAPHS=$g"
    LOOM_CUDA_GRAPHS=$g $L bench model -m "$W/q05_awq" --backend cuda --prompt 256 --gen 128 2>&1 | grep -E "prompt|decode|traffic"
done
$L synth --preset qwen2.5-7b --awq --layers 8 --out "$W/q7_awq" >/dev/null
for g in 1 0; do
    echo "-- Qwen2.5-7B AWQ (8 of 28 layers), LOOM_CUDA_GRAPHS=$g"
    LOOM_CUDA_GRAPHS=$g $L bench model -m "$W/q7_awq" --backend cuda --prompt 512 --gen 64 2>&1 | grep -E "prompt|decode|traffic"
done
cd "$ROOT"
