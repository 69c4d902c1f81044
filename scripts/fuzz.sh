#!/usr/bin/env bash
# Build the libFuzzer targets with clang (ASan + UBSan) and run each for a
# bounded time. Exits non-zero on any crash; 77 when clang is missing.
#   scripts/fuzz.sh [SECONDS per run, default 60]
#  - fuzz_safetensors: any bytes as a safetensors file
#  - fuzz_tokenizer: text against the Qwen2 tokenizer.json (when
#    ../shared/data or $LOOM_FUZZ_TOKENIZER has one), then the JSON loader
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-60}
out=build-fuzz
command -v clang >/dev/null || { echo "fuzz: clang is not installed" >&2; exit 77; }
mkdir -p "$out/corpus-text" "$out/corpus-json" "$out/corpus-st"
build() { # name, sources...
  local name=$1; shift
  clang -std=c11 -D_GNU_SOURCE -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
    -Icore -Igraph -Imodels/qwen2 "$@" core/status.c core/log.c core/dtype.c \
    $(pkg-config --cflags --libs libcjson libpcre2-8 libutf8proc) -lm -o "$out/$name"
}
run() { # name, corpus, max_len
  "$out/$1" -max_total_time="$secs" -max_len="$3" -timeout=10 -rss_limit_mb=4096 -artifact_prefix="$out/" "$2"
}
build fuzz_safetensors fuzz/fuzz_safetensors.c models/qwen2/safetensors.c
build fuzz_tokenizer fuzz/fuzz_tokenizer.c models/qwen2/tokenizer.c

printf '\x40\x00\x00\x00\x00\x00\x00\x00{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}          12345678' \
  > "$out/corpus-st/seed-one-tensor"
echo "fuzz: safetensors header parser for ${secs}s"
run fuzz_safetensors "$out/corpus-st" 4096

tok=${LOOM_FUZZ_TOKENIZER:-../shared/data/qwen2-tokenizer/tokenizer.json}
if [ -f "$tok" ]; then
  inp=$(dirname "$tok")/vocab-tests.inp
  [ -f "$inp" ] && cp "$inp" "$out/corpus-text/seed-vocab-tests"
  printf '<|im_start|>user\nhi <think>\xf0\x9f\xa6\x99</think><|im_end|>' > "$out/corpus-text/seed-chat"
  echo "fuzz: tokenizer text against $tok for ${secs}s"
  LOOM_FUZZ_TOKENIZER=$tok run fuzz_tokenizer "$out/corpus-text" 4096
else
  echo "fuzz: no tokenizer.json at $tok; skipping the tokenizer text mode"
fi
cp tests/data/tokenizer/tiny.json "$out/corpus-json/seed-tiny"
echo "fuzz: tokenizer.json loader for ${secs}s"
LOOM_FUZZ_TOKENIZER= run fuzz_tokenizer "$out/corpus-json" 16384
