#!/usr/bin/env bash
# Runs every cargo-fuzz target for LLMCM_FUZZ_SECONDS seconds each (default 15), on stable Rust
# (--sanitizer none), seeded with the golden fixtures. A longer run: LLMCM_FUZZ_SECONDS=600.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${LLMCM_FUZZ_SECONDS:-15}"
corpus=fuzz/corpus
fixtures=tests/fixtures
mkdir -p "$corpus"/{scan_segment,decode_commit,decode_fixed_files,decode_record,decode_index,decode_image,check_json}
# scan_segment's first byte picks the mode: bit 0 prepends a header, bit 1 selects the strict rule.
for f in segment-sealed.valid segment-sealed.corrupt segment-active.valid segment-active.torn; do
  { printf '\x00'; cat "$fixtures/$f"; } > "$corpus/scan_segment/$f.tolerant"
  { printf '\x02'; cat "$fixtures/$f"; } > "$corpus/scan_segment/$f.strict"
done
cp "$fixtures"/commit-1.canonical "$fixtures"/commit-1.corrupt "$corpus/decode_commit/"
cp "$fixtures"/manifest.* "$fixtures"/clean.* "$corpus/decode_fixed_files/"
tail -c 128 "$fixtures/segment-sealed.valid" > "$corpus/decode_record/seal.valid"
# decode_image: the fixture whole; its first 4 bytes also serve as an entry count for the framed run.
cp "$fixtures"/image.* "$corpus/decode_image/"
# decode_index: one valid version directory block (FORMAT.md "Version directory"), so the fuzzer
# starts from the accepting path of DirBlock::open.
python3 - "$corpus/decode_index/dir-block.valid" <<'PY'
import struct, sys, zlib
fences, covered, step, key_id = 2, 3, 2, 7
head = struct.pack("<5I", covered, fences, step, key_id, 0)
arrays = struct.pack("<2Q", 10, 30) + struct.pack("<2Q", 1, 3)
crc = zlib.crc32(head + arrays)
rows = b""
for index, rev in ((4, 1), (9, 3)):
    row = struct.pack("<QQIIIII", index, rev, 1, 1, 100 * rev, 12, 0)
    rows += row + struct.pack("<I", zlib.crc32(row))
open(sys.argv[1], "wb").write(head + struct.pack("<I", crc) + arrays + rows)
PY
# check_json: a few values of each kind (the grammar, escapes, nesting, a duplicate name).
printf '%s' '{"model":"m1","t":0.7,"stop":["\n","\u00e9\ud83d\ude00"],"n":[-1.5e3,true,null,{}]}' > "$corpus/check_json/value.json"
printf '%s' '{"a":1,"a":2}' > "$corpus/check_json/duplicate.json"
for target in $(cargo fuzz list); do
  echo "fuzz: $target for ${seconds}s"
  cargo fuzz run --sanitizer none "$target" "$corpus/$target" -- \
    -max_total_time="$seconds" -print_final_stats=0 2>&1 | grep -E "^(Done|INFO: seed corpus)|ERROR|panicked|SUMMARY" || true
  # cargo fuzz exits non-zero on a crash; pipefail is defeated by grep's `|| true`, so check
  # for artifacts explicitly.
  if compgen -G "fuzz/artifacts/$target/*" > /dev/null; then
    echo "fuzz: $target found a failing input:" fuzz/artifacts/"$target"/*
    exit 1
  fi
done
