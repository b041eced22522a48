"""One OpenFlow connection under os-ken's native threads, made to end with all its threads.

os-ken serves a connection with three threads: the handler (it receives), a sender and an echo loop.
When receiving ends, os-ken stops the other two with ``hub.kill`` -- a no-op on native threads -- and
joins them. The echo loop ends by itself, but the sender waits on its queue: after an echo timeout
(which half-closes without queueing anything) nothing ever wakes it, and the handler waits on the
sender, so two threads per connection stayed forever. Here, in a subclass of os-ken's ``Datapath``:

- the end of the receive loop wakes the sender (an empty message that closes) and the echo loop;
- the echo loop also enforces the handshake deadline, and drops a connection by shutting down both
  directions, so a peer that hangs does not keep the receive loop waiting;
- ``ConnectionGuard`` (os-ken's connection factory) bounds the connections still in their handshake
  and logs one line per connection that ends, with why;
- echo requests count as unanswered only while nothing the switch sent waits unread in the socket
  (``admission.overdue``): a controller behind on its reads keeps its switches.

Imported only once os-ken is configured (``sdnctl.runtime.start_openflow``).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import queue
import socket
import struct
import termios
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from os_ken.controller import controller as of_controller
from os_ken.controller.handler import DEAD_DISPATCHER, MAIN_DISPATCHER

from sdnctl.admission import ECHO_TIMEOUT, HANDSHAKE_TIMEOUT, ConnectionLimits, HandshakeSlots, Throttle, overdue

LOG = logging.getLogger("edgectl.sdnctl.connections")

Clock = Callable[[], float]


def unread_bytes(sock: Any) -> int:
    """Bytes waiting in ``sock``'s receive buffer (FIONREAD), 0 when it is closed or cannot say."""
    try:
        answer = fcntl.ioctl(sock.fileno(), termios.FIONREAD, b"\0\0\0\0")
    except (OSError, ValueError, AttributeError):
        return 0
    return int(struct.unpack("i", answer)[0])


class GuardedDatapath(of_controller.Datapath):  # type: ignore[misc]
    """os-ken's Datapath whose sender and echo loop end when the connection does."""

    def __init__(
        self,
        sock: Any,
        address: Any,
        *,
        handshake_timeout_s: float | None,
        on_handshake_done: Callable[[], None],
        clock: Clock = time.monotonic,
    ) -> None:
        # Set before os-ken's __init__, which already calls set_state.
        self.drop_reason: str | None = None
        self._state_lock = threading.Lock()
        self.handshake_done = False
        self._on_handshake_done = on_handshake_done
        self._handshake_timeout_s = handshake_timeout_s
        self._clock = clock
        self._connected_at = clock()
        self._ended = threading.Event()
        super().__init__(sock, address)

    def set_state(self, state: Any) -> None:
        # One at a time: os-ken's handshake handler (towards MAIN) and the echo loop or receive loop
        # (towards DEAD) run on different threads, and each state's event must reach the app in the order
        # the states were taken. (The app only reads the events: nobody waits for this lock on its thread.)
        with self._state_lock:
            if self.state == DEAD_DISPATCHER and state != DEAD_DISPATCHER:
                # Dead is final. A connection dropped mid-handshake (its deadline passed while the
                # controller was behind) may still have its last handshake reply queued, whose handler
                # then moves it to MAIN: registered as its switch, it would shadow the switch's new
                # connection, every probe and table write sent into a closed socket.
                return
            if state == MAIN_DISPATCHER and not self.handshake_done:
                # Done before MAIN is announced: the deadline never drops a connection the app took.
                self.handshake_done = True
                self._on_handshake_done()
            super().set_state(state)

    def drop(self, reason: str) -> None:
        """End the connection now: both directions shut, so a blocked receive returns at once."""
        if self.drop_reason is None:
            self.drop_reason = reason
        self.set_state(DEAD_DISPATCHER)
        with contextlib.suppress(OSError):
            self.socket.shutdown(socket.SHUT_RDWR)

    def _recv_loop(self) -> None:
        try:
            super()._recv_loop()  # closes the socket when it ends
        finally:
            self._ended.set()
            self._wake_sender()

    def _wake_sender(self) -> None:
        """Queue an empty closing message, through the queue's semaphore as os-ken's send() does.

        If no slot is free the sender is busy; its next write meets the closed socket and it ends.
        """
        send_q = self.send_q
        if send_q is None or not self._send_q_sem.acquire(blocking=False):
            return
        try:
            send_q.put_nowait((b"", True))
        except queue.Full:
            self._send_q_sem.release()

    def unread_bytes(self) -> int:
        """What the switch sent that this controller has not read yet (0 when the socket is gone)."""
        return unread_bytes(self.socket)

    def _echo_request_loop(self) -> None:
        """os-ken's echo loop, woken by the connection's end, and keeping the handshake deadline."""
        echo_interval_s = self.echo_request_interval if self.max_unreplied_echo_requests else None
        next_echo_at = self._connected_at
        while not self._ended.is_set():
            now = self._clock()
            reason = overdue(
                now=now,
                connected_at=self._connected_at,
                handshake_done=self.handshake_done,
                handshake_timeout_s=self._handshake_timeout_s,
                unreplied_echoes=len(self.unreplied_echo_requests),
                max_unreplied_echoes=self.max_unreplied_echo_requests,
                unread_bytes=self.unread_bytes() if self.unreplied_echo_requests else 0,
            )
            if reason is not None:
                self.drop(reason)
                return
            if self.send_q is None:  # the sender met a dead socket: end as os-ken does
                self.close()
                return
            waits = []
            if echo_interval_s is not None:
                if now >= next_echo_at:
                    echo = self.ofproto_parser.OFPEchoRequest(self)
                    self.unreplied_echo_requests.append(self.set_xid(echo))
                    self.send_msg(echo)
                    next_echo_at = now + echo_interval_s
                waits.append(next_echo_at - now)
            if not self.handshake_done and self._handshake_timeout_s is not None:
                waits.append(self._connected_at + self._handshake_timeout_s - now)
            self._ended.wait(max(min(waits), 0.01) if waits else None)


class _Slot:
    """A connection's place among those in their handshake, given back once (done or ended)."""

    def __init__(self, lock: threading.Lock, slots: HandshakeSlots) -> None:
        self._lock = lock
        self._slots = slots
        self._held = True

    def give_back(self) -> None:
        with self._lock:
            if self._held:
                self._held = False
                self._slots.give_back()


def peer_name(address: Any) -> str:
    """host:port of a peer's socket address."""
    if isinstance(address, tuple) and len(address) >= 2:
        return f"{address[0]}:{address[1]}"
    return str(address)


class ConnectionGuard:
    """os-ken's ``datapath_connection_factory``: admits, serves and accounts for each connection."""

    def __init__(self, limits: ConnectionLimits, clock: Clock = time.monotonic) -> None:
        self.limits = limits
        self._clock = clock
        self._lock = threading.Lock()
        self._slots = HandshakeSlots(limits.max_handshaking)
        self._refusals = Throttle(limits.refusal_log_interval_s)
        self._live: set[GuardedDatapath] = set()
        self._serving: set[threading.Thread] = set()
        self._stopping = False
        self._flush_timer: threading.Timer | None = None
        self._admitted = threading.local()  # the slot serve_admitted took for this thread's connection
        self.listeners: list[Any] = []  # os-ken StreamServers serving through this guard (they add themselves)

    @property
    def handshaking(self) -> int:
        with self._lock:
            return self._slots.taken

    def stop(self, reason: str = "controller stopping", timeout_s: float = 10.0) -> None:
        """Stop accepting, drop every connection, and wait (bounded) for their threads to end."""
        with self._lock:
            self._stopping = True
            live = list(self._live)
            serving = list(self._serving)
            if self._flush_timer is not None:
                self._flush_timer.cancel()
        for listener in self.listeners:
            listener.stop()
        for datapath in live:
            datapath.drop(reason)
        deadline = time.monotonic() + timeout_s
        for thread in serving:
            thread.join(max(0.0, deadline - time.monotonic()))
        left = sum(thread.is_alive() for thread in serving)
        if left:
            LOG.warning("%d OpenFlow connections still ending after %.0f s", left, timeout_s)

    def __call__(self, sock: Any, address: Any) -> None:
        with self._serving_thread():
            self._serve(sock, address)

    @contextlib.contextmanager
    def _serving_thread(self) -> Iterator[None]:
        """This thread serves a connection: stop() waits for it."""
        thread = threading.current_thread()
        with self._lock:
            nested = thread in self._serving
            self._serving.add(thread)
        try:
            yield
        finally:
            if not nested:
                with self._lock:
                    self._serving.discard(thread)

    def serve_admitted(self, sock: Any, address: Any, serve: Callable[[], None]) -> None:
        """Admit a connection, then ``serve`` it (os-ken's TLS handshake, then this guard).

        The slot and the handshake deadline then cover the TLS handshake too, where a peer that never
        sends its hello would otherwise hold a thread forever (os-ken's sockets have no timeout then).
        """
        slot = self._admit(address)
        if slot is None:
            with contextlib.suppress(OSError):
                sock.close()
            return
        if self.limits.handshake_timeout_s is not None:
            sock.settimeout(self.limits.handshake_timeout_s)  # os-ken's Datapath sets its own after
        self._admitted.slot = slot
        try:
            with self._serving_thread():
                serve()
        finally:
            self._admitted.slot = None
            slot.give_back()

    def _serve(self, sock: Any, address: Any) -> None:
        slot = getattr(self._admitted, "slot", None) or self._admit(address)
        if slot is None:
            with contextlib.suppress(OSError):
                sock.close()
            return
        try:
            datapath = GuardedDatapath(
                sock,
                address,
                handshake_timeout_s=self.limits.handshake_timeout_s,
                on_handshake_done=slot.give_back,
                clock=self._clock,
            )
        except OSError as exc:  # the peer was gone before it was served
            slot.give_back()
            with contextlib.suppress(OSError):
                sock.close()
            LOG.info("OpenFlow connection from %s closed before it was served: %s", peer_name(address), exc)
            return
        failure: Exception | None = None
        with self._lock:
            self._live.add(datapath)
            if self._stopping:
                datapath.drop("controller stopping")
        with contextlib.closing(datapath):
            try:
                datapath.serve()
            except Exception as exc:  # bad input from the peer: logged below, never re-raised
                failure = exc
            finally:
                slot.give_back()
                with self._lock:
                    self._live.discard(datapath)
        self._log_end(datapath, failure)

    def _admit(self, address: Any) -> _Slot | None:
        with self._lock:
            if self._stopping:
                return None
            if self._slots.take():
                return _Slot(self._lock, self._slots)
            now = self._clock()
            count = self._refusals.note(now)
            due_at = self._refusals.flush_due_at()
            if count is None and due_at is not None and self._flush_timer is None:
                # One timer per burst: the refusals this line did not show are counted when it fires.
                self._flush_timer = threading.Timer(max(0.0, due_at - now), self._flush_refusals)
                self._flush_timer.daemon = True
                self._flush_timer.start()
        if count is not None:
            LOG.warning(
                "refused OpenFlow connection from %s: %d connections are still in their handshake (the limit)%s",
                peer_name(address),
                self.limits.max_handshaking,
                f"; {count - 1} more refused since the last such line" if count > 1 else "",
            )
        return None

    def _flush_refusals(self) -> None:
        with self._lock:
            self._flush_timer = None
            count = self._refusals.flush(self._clock())
        if count:
            LOG.warning("%d more OpenFlow connections were refused (handshake limit)", count)

    def _log_end(self, datapath: GuardedDatapath, failure: Exception | None) -> None:
        peer = peer_name(datapath.address)
        dpid = "unknown" if datapath.id is None else f"{datapath.id:016x}"
        if failure is not None:
            why = f"malformed: {type(failure).__name__}: {failure}"
        elif datapath.drop_reason == ECHO_TIMEOUT:
            why = f"{ECHO_TIMEOUT} (more than {datapath.max_unreplied_echo_requests} echo requests unanswered)"
        elif datapath.drop_reason == HANDSHAKE_TIMEOUT:
            why = f"{HANDSHAKE_TIMEOUT} (not done in {self.limits.handshake_timeout_s:g} s)"
        elif datapath.drop_reason is not None:
            why = datapath.drop_reason
        else:
            LOG.info("OpenFlow connection from %s (switch %s) closed", peer, dpid)
            return
        LOG.warning("OpenFlow connection from %s (switch %s) dropped: %s", peer, dpid, why)
