"""The proxy's keep-alive HTTP/1.1 forwarder against a tiny asyncio server."""

from __future__ import annotations

import asyncio

import pytest
from waiting import free_port

from redfl.edge.forward import ForwardError, LcpConnections


async def serve(port: int, replies: list[bytes], close_after: int) -> asyncio.Server:
    """Answer each request with the next reply; close a connection after ``close_after``."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for _ in range(close_after):
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(
                int(line.split(b":")[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length")
            )
            await reader.readexactly(length)
            body = replies.pop(0)
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body))
            await writer.drain()
        writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", port)


def test_keep_alive_reuse_and_a_stale_connection_is_retried() -> None:
    async def main() -> list[bytes]:
        port = free_port()
        server = await serve(port, [b"one", b"two", b"three"], close_after=2)
        pool = LcpConnections("127.0.0.1", port)
        out = []
        for _ in range(3):  # the third finds its kept-alive connection closed, and reconnects
            status, body = await pool.post("/job", b"{}", {"content-type": "application/json"})
            assert status == 200
            out.append(body)
            await asyncio.sleep(0.05)
        server.close()
        return out

    assert asyncio.run(main()) == [b"one", b"two", b"three"]


def test_an_lcp_that_is_down_raises_forward_error() -> None:
    pool = LcpConnections("127.0.0.1", free_port())
    with pytest.raises(ForwardError, match="cannot connect"):
        asyncio.run(pool.post("/job", b"{}", {}))


def test_an_lcp_that_hangs_times_out() -> None:
    async def main() -> None:
        port = free_port()

        async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await asyncio.sleep(5)

        server = await asyncio.start_server(silent, "127.0.0.1", port)
        try:
            await LcpConnections("127.0.0.1", port, timeout=0.2).post("/job", b"{}", {})
        finally:
            server.close()

    with pytest.raises(ForwardError, match="TimeoutError"):
        asyncio.run(main())
