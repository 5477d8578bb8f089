#!/usr/bin/env python3
"""Hold a crowd of connections that never authenticate against an aop-origin guard, and
measure the edge's requests while they are held.

Usage: flood.py --port P --tcp N --tls N --sources K --origin-ca F --edge-cert F --edge-key F

Opens N plain TCP connections that never send a ClientHello and N certificate-less TLS
connections to the `optional` site opt.test (each sends one request, then idles), spread
over K source addresses 127.0.1.x (K=1: all from 127.0.0.1), keeps them open, then runs
the edge's requests (curl with the edge's certificate to the `require` site a.test) and
prints one line of figures. Bounded: every phase has a deadline and the script exits.
"""
import argparse
import asyncio
import ssl
import statistics
import subprocess
import time


def source(i, k):
    if k <= 1:
        return "127.0.0.1"
    n = i % k
    return f"127.0.{1 + n // 250}.{1 + n % 250}"


async def hold_tcp(port, i, k, held, failed, sem):
    async with sem:
        try:
            r, w = await asyncio.wait_for(
                asyncio.open_connection("127.0.0.1", port, local_addr=(source(i, k), 0)), 10)
            held.append((r, w))
        except Exception:
            failed.append(i)


def prune(held, closed):
    """Close our end of every connection the guard has closed (frees our descriptors);
    return how many are still open."""
    keep = []
    for r, w in held:
        if r.at_eof() or w.is_closing():
            w.close()
            closed[0] += 1
        else:
            keep.append((r, w))
    held[:] = keep
    return len(held)


async def hold_tls(port, i, k, ctx, held, failed, sem):
    async with sem:
        try:
            r, w = await asyncio.wait_for(asyncio.open_connection(
                "127.0.0.1", port, ssl=ctx, server_hostname="opt.test",
                local_addr=(source(i, k), 0)), 20)
            w.write(b"GET / HTTP/1.1\r\nHost: opt.test\r\n\r\n")
            await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), 10)
            held.append((r, w))
        except Exception:
            failed.append(i)


def edge_requests(args, n):
    times, codes = [], []
    for _ in range(n):
        t = time.monotonic()
        out = subprocess.run(
            ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "20",
             "--resolve", f"a.test:{args.port}:127.0.0.1", "--cacert", args.origin_ca,
             "--cert", args.edge_cert, "--key", args.edge_key,
             f"https://a.test:{args.port}/"], capture_output=True, text=True)
        times.append((time.monotonic() - t) * 1000)
        codes.append(out.stdout.strip())
    return codes, times




async def main():
    p = argparse.ArgumentParser()
    for a in ("--origin-ca", "--edge-cert", "--edge-key"):
        p.add_argument(a, required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--tcp", type=int, default=10000)
    p.add_argument("--tls", type=int, default=10000)
    p.add_argument("--sources", type=int, default=1)
    p.add_argument("--edge", type=int, default=50)
    args = p.parse_args()

    base_codes, base_times = edge_requests(args, args.edge)

    ctx = ssl.create_default_context(cafile=args.origin_ca)
    tcp_held, tcp_failed, tls_held, tls_failed = [], [], [], []
    tcp_closed, tls_closed = [0], [0]
    sem = asyncio.Semaphore(1000)
    t0 = time.monotonic()
    for start in range(0, args.tcp, 1000):
        await asyncio.gather(*(hold_tcp(args.port, i, args.sources, tcp_held, tcp_failed, sem)
                               for i in range(start, min(start + 1000, args.tcp))))
        await asyncio.sleep(0)
        prune(tcp_held, tcp_closed)
    t_tcp = time.monotonic() - t0
    sem = asyncio.Semaphore(256)
    for start in range(0, args.tls, 1000):
        await asyncio.wait_for(asyncio.gather(*(
            hold_tls(args.port, i, args.sources, ctx, tls_held, tls_failed, sem)
            for i in range(start, min(start + 1000, args.tls)))), 600)
        prune(tls_held, tls_closed)
        prune(tcp_held, tcp_closed)
    t_tls = time.monotonic() - t0 - t_tcp

    loop = asyncio.get_running_loop()
    codes, times = await loop.run_in_executor(None, edge_requests, args, args.edge)
    await asyncio.sleep(0.5)
    tcp_open = prune(tcp_held, tcp_closed)
    tls_open = prune(tls_held, tls_closed)
    served = codes.count("200")
    print(f"FLOOD tcp: {args.tcp} opened in {t_tcp:.2f}s ({len(tcp_failed)} refused at connect), "
          f"{tcp_closed[0]} closed by the guard, {tcp_open} still open; sources={args.sources}")
    print(f"FLOOD tls (no certificate, optional site): {args.tls} attempted in {t_tls:.1f}s "
          f"({len(tls_failed)} failed before their first response), {tls_closed[0]} closed "
          f"by the guard, {tls_open} still open")
    print(f"EDGE baseline: {base_codes.count('200')}/{len(base_codes)} served, "
          f"p50 {statistics.median(base_times):.1f} ms, max {max(base_times):.1f} ms")
    print(f"EDGE under flood: {served}/{len(codes)} served, "
          f"p50 {statistics.median(times):.1f} ms, max {max(times):.1f} ms, "
          f"p50 ratio flood/baseline {statistics.median(times) / statistics.median(base_times):.2f}")
    for _, w in tls_held:
        w.close()
    for w in tcp_held:
        w.close()
    return 0 if served == len(codes) else 1


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
