"""Faulty peers for bench/fault-matrix.sh (loopback only, bounded in time).

    faults.py upstream MODE PORT            an upstream that misbehaves until killed
    faults.py client MODE PORT PATH N SECS   N clients that misbehave for SECS seconds

Upstream modes: hang (reads the request, never answers), garbage (answers
bytes that are not HTTP), reset (promises 100000 bytes, sends 1000, then
resets the connection), trickle (a chunked body, one byte per 100 ms),
endless (a chunked body sent as fast as it is read, forever).
Client modes: slowloris (a request head one header a second, never ended),
idle (one request answered, then the connection held silent), noread (a
request for PATH whose answer is never read).
"""

import asyncio
import os
import socket
import struct
import sys
import time


async def read_head(reader):
    try:
        await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
        pass


async def upstream(mode, port):
    async def handle(reader, writer):
        await read_head(reader)
        try:
            if mode == "hang":
                await asyncio.sleep(3600)
            elif mode == "garbage":
                writer.write(os.urandom(512))
                await writer.drain()
            elif mode == "reset":
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100000\r\n\r\n" + b"x" * 1000)
                await writer.drain()
                sock = writer.get_extra_info("socket")
                # SO_LINGER 0: close sends RST, not FIN.
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            elif mode in ("trickle", "endless"):
                writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-type: text/plain\r\n\r\n")
                chunk = b"1\r\nx\r\n" if mode == "trickle" else b"4000\r\n" + b"x" * 0x4000 + b"\r\n"
                while True:
                    writer.write(chunk)
                    await writer.drain()
                    if mode == "trickle":
                        await asyncio.sleep(0.1)
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", port, backlog=1024)
    async with server:
        await server.serve_forever()


async def client(mode, port, path, n, secs):
    end = time.monotonic() + secs
    head = f"GET {path} HTTP/1.1\r\nhost: bench\r\n".encode()

    async def one(i):
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            return
        try:
            if mode == "slowloris":
                writer.write(head)
                while time.monotonic() < end:
                    writer.write(f"x-slow-{i}: 1\r\n".encode())
                    await writer.drain()
                    await asyncio.sleep(1)
            elif mode == "idle":
                writer.write(head + b"\r\n")
                await writer.drain()
                await read_head(reader)
                await asyncio.sleep(max(0.0, end - time.monotonic()))
            elif mode == "noread":
                writer.write(head + b"\r\n")
                await writer.drain()
                await asyncio.sleep(max(0.0, end - time.monotonic()))
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    await asyncio.gather(*(one(i) for i in range(n)))


def main():
    role, mode = sys.argv[1], sys.argv[2]
    if role == "upstream":
        asyncio.run(upstream(mode, int(sys.argv[3])))
    else:
        port, path, n, secs = int(sys.argv[3]), sys.argv[4], int(sys.argv[5]), float(sys.argv[6])
        asyncio.run(client(mode, port, path, n, secs))


if __name__ == "__main__":
    main()
