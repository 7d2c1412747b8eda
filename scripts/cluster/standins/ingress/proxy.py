"""A TCP proxy standing in for an ingress controller.

usage: ingress-proxy LISTEN_PORT BACKEND_HOST BACKEND_PORT
Each new connection goes to the next of the addresses BACKEND_HOST resolves
to now (every ready replica of the Service), so replicas that come and go
are followed and a dead one is skipped.
"""
import asyncio
import itertools
import signal
import socket
import sys

TURN = itertools.count()


async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        try:
            writer.close()
        except Exception:  # noqa: BLE001 (already closed by the peer)
            pass


async def connect_backend(host: str, port: int):
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    addresses = sorted({info[4][0] for info in infos})
    if not addresses:
        raise OSError(f"{host} resolves to nothing")
    start = next(TURN)
    last_error = None
    for i in range(len(addresses)):
        address = addresses[(start + i) % len(addresses)]
        try:
            return await asyncio.wait_for(asyncio.open_connection(address, port), 5)
        except (OSError, asyncio.TimeoutError) as err:
            last_error = err
    raise OSError(f"no replica of {host}:{port} answers: {last_error}")


def handler(host: str, port: int):
    async def handle(client_reader, client_writer):
        try:
            backend_reader, backend_writer = await connect_backend(host, port)
        except OSError as err:
            print(f"ingress: {err}", flush=True)
            client_writer.write(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            client_writer.close()
            return
        await asyncio.gather(pipe(client_reader, backend_writer), pipe(backend_reader, client_writer))

    return handle


async def main() -> None:
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    listen_port, host, port = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    server = await asyncio.start_server(handler(host, port), "0.0.0.0", listen_port)
    print(f"ingress: :{listen_port} -> {host}:{port}", flush=True)
    # As PID 1 nothing ends the process on SIGTERM unless it says so.
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    async with server:
        await stop.wait()


if __name__ == "__main__":
    asyncio.run(main())
