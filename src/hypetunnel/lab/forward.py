"""A byte forwarder from a unix socket to a TCP address, run inside a lab namespace.

An attached bare lab's controllers serve their API on management-overlay addresses that
exist only inside the hosts' namespaces. The lab's own clients (CLI, compute agent, tests)
run in the root namespace, so one of these forwarders per controller runs in a host's
namespace and relays every connection from a unix socket (reachable through the shared
filesystem) to the controller's address. It relays bytes only: TLS and the token stay end to
end between the client and the controller.

The other way round (`--tcp`): a TCP listener relaying to a unix socket, so a TCP-only client
(Prometheus) reaches a lab controller whose API is served on a unix socket in its namespace.

    python -m hypetunnel.lab.forward SOCKET HOST PORT
    python -m hypetunnel.lab.forward --tcp HOST PORT SOCKET
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

CHUNK = 64 * 1024


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError):
        while data := await reader.read(CHUNK):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()  # pass a half-close on; the other direction may still run


Connect = Callable[[], Awaitable[tuple[asyncio.StreamReader, asyncio.StreamWriter]]]


async def _relay(connect: Connect, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter) -> None:
    try:
        up_reader, up_writer = await connect()
    except OSError:
        writer.close()  # the client sees the connection refused, as it would directly
        return
    try:
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
    finally:
        for w in (writer, up_writer):
            w.close()


async def serve(socket: Path, host: str, port: int) -> None:
    socket.unlink(missing_ok=True)
    server = await asyncio.start_unix_server(
        lambda r, w: _relay(lambda: asyncio.open_connection(host, port), r, w),
        path=str(socket))
    async with server:
        await server.serve_forever()


async def serve_tcp(host: str, port: int, socket: Path) -> None:
    server = await asyncio.start_server(
        lambda r, w: _relay(lambda: asyncio.open_unix_connection(str(socket)), r, w),
        host=host, port=port)
    async with server:
        await server.serve_forever()


USAGE = ("usage: python -m hypetunnel.lab.forward SOCKET HOST PORT\n"
         "       python -m hypetunnel.lab.forward --tcp HOST PORT SOCKET")


def main(argv: list[str]) -> int:
    if len(argv) == 4 and argv[0] == "--tcp" and argv[2].isdigit():
        asyncio.run(serve_tcp(argv[1], int(argv[2]), Path(argv[3])))
        return 0
    if len(argv) != 3 or not argv[2].isdigit():
        print(USAGE, file=sys.stderr)
        return 2
    asyncio.run(serve(Path(argv[0]), argv[1], int(argv[2])))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
