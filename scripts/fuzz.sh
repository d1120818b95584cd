#!/usr/bin/env bash
# Runs every cargo-fuzz target for SECONDS each (default 60), starting from the seeds
# in fuzz/seeds/<target> when there are any. A crash stops the run with the input
# saved under fuzz/artifacts/<target>/; turn it into a regression test.
#
# cargo fuzz needs nightly-only compiler flags (sanitizers); the machine's one stable
# toolchain accepts them with RUSTC_BOOTSTRAP=1, which is confined to this script.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-60}"
export RUSTC_BOOTSTRAP=1
if ! command -v cargo-fuzz >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked --quiet
fi
cargo fuzz build -O
for target in $(cargo fuzz list); do
    mkdir -p "fuzz/corpus/$target"
    corpora=("fuzz/corpus/$target")
    [ -d "fuzz/seeds/$target" ] && corpora+=("fuzz/seeds/$target")
    echo "fuzz target $target: ${seconds}s"
    log="fuzz/corpus/$target.log"
    if ! cargo fuzz run -O "$target" "${corpora[@]}" -- -max_total_time="$seconds" >"$log" 2>&1; then
        grep -E 'panicked|ERROR|SUMMARY|Test unit written' "$log" | head -20 >&2 || true
        echo "fuzz target $target failed; the input is in fuzz/artifacts/$target/" >&2
        exit 1
    fi
    grep -E '^Done' "$log" || true
done
