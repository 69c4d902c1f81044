#!/usr/bin/env bash
# Install dependencies, build, and run every test suite; then the unit suites
# again under AddressSanitizer + UndefinedBehaviorSanitizer; then the fuzzers
# for a bounded time.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
[ -d build ] || meson setup build --buildtype=release
ninja -C build
status=0
meson test -C build --print-errorlogs || status=1
# The sanitizer run covers loom's own code; the GPU plugins load third-party
# drivers (PoCL, Mesa, CUDA) that are not sanitizer-clean, so they run in the
# release build above only.
[ -d build-asan ] || meson setup build-asan --buildtype=debugoptimized -Db_sanitize=address,undefined -Db_lundef=false \
  -Dcuda=disabled -Dvulkan=disabled -Dopencl=disabled
ninja -C build-asan
ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
  meson test -C build-asan --suite unit --print-errorlogs || status=1
# fuzz the safetensors header parser and the tokenizer for a bounded time
fuzz_status=0
scripts/fuzz.sh "${LOOM_FUZZ_SECONDS:-30}" > build/fuzz.log 2>&1 || fuzz_status=$?
tail -n 3 build/fuzz.log
if [ "$fuzz_status" -ne 0 ] && [ "$fuzz_status" -ne 77 ]; then
  echo "fuzz: FAILED (log: build/fuzz.log)"; status=1
fi
python3 scripts/summary.py build/meson-logs/testlog.json build-asan/meson-logs/testlog.json
exit $status
