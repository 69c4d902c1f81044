#!/usr/bin/env bash
# Install dependencies, build, and run every test suite; then the unit suites
# again under AddressSanitizer + UndefinedBehaviorSanitizer.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
[ -d build ] || meson setup build --buildtype=release
ninja -C build
status=0
meson test -C build --print-errorlogs || status=1
[ -d build-asan ] || meson setup build-asan --buildtype=debugoptimized -Db_sanitize=address,undefined -Db_lundef=false
ninja -C build-asan
ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
  meson test -C build-asan --suite unit --print-errorlogs || status=1
python3 scripts/summary.py build/meson-logs/testlog.json build-asan/meson-logs/testlog.json
exit $status
