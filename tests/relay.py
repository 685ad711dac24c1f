"""A TCP relay that can freeze: it keeps every connection open and stops forwarding, as a wedged proxy does.

The kernel still acknowledges what a client sends to it, so neither the client's
TCP stack nor the server behind it notices anything: only the client's own
deadlines can end its wait.
"""

from __future__ import annotations

import asyncio
import threading


class FreezableRelay:
    """Relays 127.0.0.1:``port`` to ``target``; :meth:`freeze` and :meth:`thaw` stop and resume forwarding."""

    def __init__(self, target_host: str, target_port: int):
        self.target = (target_host, target_port)
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._flowing: asyncio.Event | None = None
        self._server: asyncio.AbstractServer | None = None
        started = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(started,), name="relay", daemon=True)
        self._thread.start()
        started.wait(timeout=30)

    def _run(self, started: threading.Event) -> None:
        asyncio.set_event_loop(self._loop)
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._server = self._loop.run_until_complete(asyncio.start_server(self._relay, "127.0.0.1", 0))
        self.port = self._server.sockets[0].getsockname()[1]
        started.set()
        self._loop.run_forever()

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                await self._flowing.wait()  # frozen: the bytes are taken in and held
                writer.write(data)
                await writer.drain()
        except OSError:
            pass
        finally:
            writer.close()  # cancelled at shutdown too: the loop is still running here

    async def _relay(self, client_reader, client_writer) -> None:
        try:
            await self._flowing.wait()
            server_reader, server_writer = await asyncio.open_connection(*self.target)
        except (OSError, asyncio.CancelledError):
            client_writer.close()
            return
        await asyncio.gather(self._pump(client_reader, server_writer), self._pump(server_reader, client_writer))

    def freeze(self) -> None:
        self._loop.call_soon_threadsafe(self._flowing.clear)

    def thaw(self) -> None:
        self._loop.call_soon_threadsafe(self._flowing.set)

    async def _shut_down(self) -> None:
        self._server.close()
        others = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
        for task in others:
            task.cancel()
        await asyncio.gather(*others, return_exceptions=True)
        await self._server.wait_closed()

    def close(self) -> None:
        """Stop relaying: every connection is closed and every task ended before the loop stops."""
        asyncio.run_coroutine_threadsafe(self._shut_down(), self._loop).result(timeout=30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=30)
        self._loop.close()
