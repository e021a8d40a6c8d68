#!/usr/bin/env bash
# The proxy's hot path over the in-memory store, side by side with direct store access and the original ZDDM's
# figures, with malloc counts (the interposer is preloaded so that it sees every allocation). Arguments go to the
# driver: repetitions, then key counts (default: 3 100000 1000000).
set -euo pipefail
cd "$(dirname "$0")"
swift build -c release --product HotPathBench >/dev/null
BIN=$(swift build -c release --show-bin-path)
LD_PRELOAD="$BIN/libMallocInterposerSwift.so" "$BIN/HotPathBench" gate
LD_PRELOAD="$BIN/libMallocInterposerSwift.so" "$BIN/HotPathBench" "$@"
