#!/usr/bin/env bash
# A 1 GiB upload through aop-origin in bounded memory (issue 13): curl -T - with the
# edge's certificate, over HTTP/2 and then over HTTP/1.1, through the release aop-origin
# binary to an upstream that checks every byte and keeps none; prints the guard's peak
# resident set (VmHWM) before and after each upload. The same test as CI's 64 MiB one
# (tests/origin_h2.rs, uploads_stream_in_bounded_memory), at full size.
#
#   bash scripts/upload-rss.sh [MIB]   (default 1024)
set -euo pipefail
cd "$(dirname "$0")/.."
AOP_UPLOAD_MIB="${1:-1024}" cargo test --release -p aop-e2e --test origin_h2 -- \
    --exact uploads_stream_in_bounded_memory --nocapture 2>&1 |
    grep -E '^upload of|test result'
