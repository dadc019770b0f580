"""An independent HTTP/3 client for tests/http3.rs: Python's aioquic.

Usage: aioquic_client.py PORT CA_FILE

Connects to 127.0.0.1:PORT asking for `localhost` (SNI), verifying the certificate
against CA_FILE, then makes, on one connection:
  - GET /from-aioquic
  - POST /echo with a 100,000-byte body
  - POST /consume with a 1 MiB body sent in 64 KiB DATA frames
  - GET /too-big with 20 header fields of 4,000 bytes (over the proxy's 64 KiB header
    limit: aioquic, unlike the h3 crate's client, sends it)
and prints one JSON line per answer: {"status": ..., "origin": ..., "length": ..., "body": ...}
(body only when short). Exits 1 on any error or after 30 s.
"""

import asyncio
import json
import ssl
import sys

from aioquic.asyncio.client import connect
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.h3.connection import H3_ALPN, H3Connection
from aioquic.h3.events import DataReceived, HeadersReceived
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.events import ConnectionTerminated


class Client(QuicConnectionProtocol):
    """Collects each stream's events until the stream ends."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.h3 = H3Connection(self._quic)
        self.events = {}
        self.waiting = {}

    def quic_event_received(self, event):
        if isinstance(event, ConnectionTerminated):
            for fut in self.waiting.values():
                if not fut.done():
                    fut.set_exception(ConnectionError(event.reason_phrase))
        for h3_event in self.h3.handle_event(event):
            if isinstance(h3_event, (HeadersReceived, DataReceived)):
                sid = h3_event.stream_id
                self.events.setdefault(sid, []).append(h3_event)
                if h3_event.stream_ended and sid in self.waiting:
                    self.waiting.pop(sid).set_result(self.events.pop(sid))

    async def request(self, method, path, chunks=(), extra=()):
        sid = self._quic.get_next_available_stream_id()
        headers = [
            (b":method", method.encode()),
            (b":scheme", b"https"),
            (b":authority", b"localhost"),
            (b":path", path.encode()),
        ] + list(extra)
        chunks = list(chunks)
        self.h3.send_headers(sid, headers, end_stream=not chunks)
        for i, chunk in enumerate(chunks):
            self.h3.send_data(sid, chunk, end_stream=i == len(chunks) - 1)
            self.transmit()
            await asyncio.sleep(0)
        fut = self._loop.create_future()
        self.waiting[sid] = fut
        self.transmit()
        events = await asyncio.wait_for(fut, 20)
        heads = [e for e in events if isinstance(e, HeadersReceived)]
        fields = dict(heads[0].headers)
        data = b"".join(e.data for e in events if isinstance(e, DataReceived))
        answer = {
            "status": int(fields[b":status"]),
            "origin": fields.get(b"x-origin", b"").decode(),
            "length": len(data),
        }
        if len(data) < 100:
            answer["body"] = data.decode(errors="replace")
        return answer


async def main(port, ca):
    config = QuicConfiguration(is_client=True, alpn_protocols=H3_ALPN, server_name="localhost")
    config.load_verify_locations(cafile=ca)
    config.verify_mode = ssl.CERT_REQUIRED
    async with connect("127.0.0.1", port, configuration=config, create_protocol=Client) as client:
        print(json.dumps(await client.request("GET", "/from-aioquic")), flush=True)
        print(json.dumps(await client.request("POST", "/echo", [b"y" * 100_000])), flush=True)
        big = [b"z" * 65536] * 16
        print(json.dumps(await client.request("POST", "/consume", big)), flush=True)
        huge = [(f"x-huge-{i}".encode(), b"h" * 4000) for i in range(20)]
        print(json.dumps(await client.request("GET", "/too-big", extra=huge)), flush=True)


if __name__ == "__main__":
    try:
        asyncio.run(asyncio.wait_for(main(int(sys.argv[1]), sys.argv[2]), 30))
    except Exception as e:  # noqa: BLE001 - any failure is the test's to report
        print(f"error: {e!r}", file=sys.stderr)
        sys.exit(1)
