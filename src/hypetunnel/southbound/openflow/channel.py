"""One OpenFlow 1.3 connection to one switch, over any asyncio stream (TCP or unix socket).

A single reader task frames messages by the 8-byte header and routes replies to waiting futures
by xid; everything we send is written by the caller's coroutine in one `write` + `drain`, so a
batch of 50,000 flow mods is one syscall-sized stream rather than 50,000 tiny writes.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import itertools
import logging
import struct
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from os_ken.ofproto import ofproto_v1_3 as ofp

from hypetunnel.aio import reap
from hypetunnel.compiler.flows import Flow
from hypetunnel.errors import SouthboundError
from hypetunnel.southbound.openflow import codec

log = logging.getLogger(__name__)

_MP_HEADER = ofp.OFP_MULTIPART_REPLY_SIZE  # 16: header + type, flags, pad
_MP_TYPE_FLAGS = struct.Struct("!HH")


class ChannelState(enum.Enum):
    HANDSHAKE = "handshake"
    READY = "ready"
    CLOSED = "closed"


@dataclass
class _Request:
    future: asyncio.Future[Any]
    multipart: bool = False
    parts: list[bytes] = field(default_factory=list)


@dataclass
class _Batch:
    """xid range of one send_flow_batch; errors the switch reports for it land here."""

    first: int
    last: int
    errors: list[str] = field(default_factory=list)


class SwitchChannel:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *,
                 echo_interval: float = 1.0, echo_timeout: float = 3.0,
                 batch_timeout: float = 120.0,
                 on_port_status: Callable[[Any], None] | None = None,
                 on_error: Callable[[str], None] | None = None) -> None:
        """on_error: told the text of every OpenFlow error message the switch sends."""
        self._reader = reader
        self._writer = writer
        self.echo_interval = echo_interval
        self.echo_timeout = echo_timeout
        self.batch_timeout = batch_timeout
        self.on_port_status = on_port_status
        self.on_error = on_error
        # Told (cookie, packets, bytes) of every flow the switch deletes (FLOW_REMOVED): set by
        # whoever owns the switch's flows, for the accounting.
        self.on_flow_removed: Callable[[int, int, int], None] | None = None
        # Told (in_port, frame, arrival on the loop's clock) of every PACKET_IN: the tunnel
        # latency probes' answers (the only frames our flows send to the controller).
        self.on_packet_in: Callable[[int | None, bytes, float], None] | None = None
        self.state = ChannelState.HANDSHAKE
        self.datapath_id: int | None = None
        # Who the switch proved to be: its certificate's common name (TLS), None when plain.
        self.identity: str | None = None
        self.certificate_serial: int | None = None  # which certificate (rotation shows here)
        peer = writer.get_extra_info("peername")
        if isinstance(peer, tuple):
            self.peer = f"{peer[0]}:{peer[1]}"
        else:  # unix sockets: the accepting side has no peer name, only our own path
            self.peer = f"unix:{peer or writer.get_extra_info('sockname') or '?'}"
        self._xids = itertools.count(1)
        self._pending: dict[int, _Request] = {}
        self._batches: list[_Batch] = []
        self._bundle_ids = itertools.count(1)
        self._hello: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._closed = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.close_reason = ""
        # Counters: what we sent and what arrived unasked (for tests and metrics).
        self.sent: Counter[str] = Counter()
        self.ignored: Counter[int] = Counter()

    def __repr__(self) -> str:
        dpid = f"{self.datapath_id:016x}" if self.datapath_id is not None else "?"
        who = f" cn={self.identity}" if self.identity else ""
        return f"<SwitchChannel dpid={dpid}{who} peer={self.peer} {self.state.value}>"

    # -- lifecycle -------------------------------------------------------------------------------

    async def handshake(self, timeout: float = 10.0) -> None:
        """HELLO both ways, then FEATURES_REQUEST for the datapath id; starts echo keepalive."""
        self._tasks.append(asyncio.create_task(self._read_loop(), name=f"of-read {self.peer}"))
        try:
            self._write([codec.hello_bytes()])
            async with asyncio.timeout(timeout):
                version = await asyncio.shield(self._hello)
            if version < codec.OFP_VERSION:
                raise SouthboundError(f"{self.peer} speaks OpenFlow version {version}, need 1.3")
            reply = await self._request(codec.features_request_bytes, timeout=timeout)
        except (TimeoutError, SouthboundError) as e:
            self._close(f"handshake failed: {e}")
            raise SouthboundError(f"OpenFlow handshake with {self.peer} failed: {e}") from e
        self.datapath_id = reply.datapath_id
        self.state = ChannelState.READY
        self._tasks.append(asyncio.create_task(self._echo_loop(), name=f"of-echo {self.peer}"))
        proof = (f" (certificate CN={self.identity} serial {self.certificate_serial:x})"
                 if self.identity and self.certificate_serial is not None else "")
        log.info("switch %016x connected from %s%s", self.datapath_id, self.peer, proof)

    async def close(self) -> None:
        self._close("closed by controller")
        await self.wait_closed()

    async def wait_closed(self) -> None:
        await self._closed.wait()
        current = asyncio.current_task()
        for t in self._tasks:
            if t is not current:
                await reap(t)

    def _close(self, reason: str) -> None:
        if self.state is ChannelState.CLOSED:
            return
        self.state = ChannelState.CLOSED
        self.close_reason = reason
        log.info("switch channel %r closed: %s", self, reason)
        err = SouthboundError(f"switch {self.peer} disconnected: {reason}")
        for req in self._pending.values():
            if not req.future.done():
                req.future.set_exception(err)
        self._pending.clear()
        if not self._hello.done():
            self._hello.set_exception(err)
        current = asyncio.current_task()
        for t in self._tasks:
            if t is not current:
                t.cancel()
        self._writer.close()
        self._closed.set()

    # -- requests --------------------------------------------------------------------------------

    def _write(self, messages: list[bytes]) -> None:
        if self.state is ChannelState.CLOSED:
            raise SouthboundError(f"switch {self.peer} is disconnected ({self.close_reason})")
        self._writer.write(b"".join(messages))

    async def _drain(self) -> None:
        try:
            await self._writer.drain()
        except (ConnectionError, OSError) as e:
            self._close(f"write failed: {e}")
            raise SouthboundError(f"switch {self.peer}: write failed: {e}") from e

    def _register(self, multipart: bool = False) -> tuple[int, _Request]:
        xid = self._next_xid()
        req = _Request(asyncio.get_running_loop().create_future(), multipart)
        self._pending[xid] = req
        return xid, req

    def _next_xid(self) -> int:
        xid = next(self._xids) & 0xFFFF_FFFF
        if xid == 0:  # 0 is what unsolicited messages carry; skip it after wrap-around
            self._xids = itertools.count(1)
            xid = next(self._xids)
        return xid

    async def _request(self, encode: Callable[[int], bytes], *, multipart: bool = False,
                       timeout: float | None = None) -> Any:
        xid, req = self._register(multipart)
        try:
            self._write([encode(xid)])
            await self._drain()
            async with asyncio.timeout(timeout or self.batch_timeout):
                return await req.future
        except TimeoutError as e:
            self._close("request timed out")
            raise SouthboundError(f"switch {self.peer} did not answer in time") from e
        finally:
            self._pending.pop(xid, None)

    async def barrier(self) -> None:
        await self._request(codec.barrier_request_bytes)

    async def dump_flow_cookies(self) -> list[int]:
        """Cookie of every flow in every table of the switch."""
        cookies: list[int] = []
        for body in await self.dump_flow_stats():
            cookies.extend(codec.flow_stats_cookies(body))
        return cookies

    async def dump_flow_stats(self) -> list[bytes]:
        """Every flow of every table, as the raw bodies of the OFPMP_FLOW reply's parts (the
        accounting reads their counters without building os-ken objects)."""
        parts: list[bytes] = await self._request(codec.flow_stats_request_bytes, multipart=True)
        return parts

    async def set_role(self, role: str, generation_id: int) -> tuple[str, int]:
        """Role request (MASTER/SLAVE/EQUAL/NOCHANGE) -> the role and generation the switch has."""
        codec.role_request_bytes(role, generation_id, 0)  # validate before registering
        reply = await self._request(lambda x: codec.role_request_bytes(role, generation_id, x))
        return codec.ROLE_NAMES.get(reply.role, str(reply.role)), reply.generation_id

    async def send_flow_batch(self, adds: Sequence[Flow], delete_cookies: Iterable[int],
                              atomic: bool = True) -> None:
        """Adds first (same-key flows are replaced in place), then deletes by cookie, then a
        barrier; raises SouthboundError if the switch rejected any message of the batch.

        Atomic batches go through an ONF bundle in two steps: OPEN + ADDs + barrier, then
        COMMIT + barrier. OVS reports a bad message when it is *added* and would still commit
        the rest of the bundle, so any error at that step discards the bundle instead.
        """
        encoded = codec.encode_flows(adds)  # a malformed flow fails here, before any byte goes
        body = encoded + [codec.delete_by_cookie_bytes(c) for c in delete_cookies]
        if not body:
            return
        if self.state is not ChannelState.READY:
            raise SouthboundError(f"switch {self.peer} is not ready ({self.state.value})")
        if not atomic:
            xid = self._reserve_xids(len(body))
            await self._send_batch([codec.with_xid(buf, xid + i) for i, buf in enumerate(body)],
                                   xid)
        else:
            bundle = next(self._bundle_ids) & 0xFFFF_FFFF
            xid = self._reserve_xids(len(body) + 1)
            messages = [codec.bundle_ctrl_bytes(bundle, ofp.ONF_BCT_OPEN_REQUEST, xid)]
            messages += [codec.bundle_add_bytes(bundle, buf, xid + 1 + i)
                         for i, buf in enumerate(body)]
            try:
                await self._send_batch(messages, xid)
            except SouthboundError:
                if self.is_ready():
                    discard = self._reserve_xids(1)
                    with contextlib.suppress(SouthboundError):
                        await self._send_batch([codec.bundle_ctrl_bytes(
                            bundle, ofp.ONF_BCT_DISCARD_REQUEST, discard)], discard)
                raise
            commit = self._reserve_xids(1)
            await self._send_batch(
                [codec.bundle_ctrl_bytes(bundle, ofp.ONF_BCT_COMMIT_REQUEST, commit)], commit)
        self.sent["flow_mod"] += len(body)
        self.sent["batch"] += 1

    def _reserve_xids(self, n: int) -> int:
        """n consecutive xids, never wrapping inside the range (errors are matched by range)."""
        first = self._next_xid()
        if first + n > 0xFFFF_FFFF:
            self._xids = itertools.count(1)
            first = self._next_xid()
        if n > 1:
            self._xids = itertools.count(first + n)
        return first

    async def _send_batch(self, messages: list[bytes], first_xid: int) -> None:
        """Write messages (xids first_xid...) and a barrier in one go; raise on any error."""
        batch = _Batch(first_xid, first_xid + len(messages) - 1)
        barrier_xid, barrier = self._register()
        messages.append(codec.barrier_request_bytes(barrier_xid))
        self._batches.append(batch)
        try:
            self._write(messages)
            await self._drain()
            async with asyncio.timeout(self.batch_timeout):
                await barrier.future
        except TimeoutError as e:
            self._close("flow batch timed out")
            raise SouthboundError(f"switch {self.peer} did not finish a flow batch") from e
        finally:
            self._pending.pop(barrier_xid, None)
            self._batches.remove(batch)
        if batch.errors:
            raise SouthboundError(f"switch {self.peer} rejected {len(batch.errors)} message(s) "
                                  f"of a flow batch: {'; '.join(batch.errors[:5])}")

    # -- reading ---------------------------------------------------------------------------------

    async def _read_loop(self) -> None:
        reason = "connection closed by switch"
        try:
            while True:
                header = await self._reader.readexactly(codec.HEADER_SIZE)
                _version, msg_type, length, xid = codec.HEADER.unpack(header)
                if length < codec.HEADER_SIZE:
                    reason = f"malformed OpenFlow header (length {length})"
                    break
                buf = header + await self._reader.readexactly(length - codec.HEADER_SIZE)
                self._dispatch(msg_type, xid, buf)
        except asyncio.IncompleteReadError:
            pass
        except (ConnectionError, OSError) as e:
            reason = f"read failed: {e}"
        except Exception as e:  # a parser bug must not leave the channel half-alive
            log.exception("switch %s: unexpected error reading", self.peer)
            reason = f"internal error: {e}"
        self._close(reason)

    def _dispatch(self, msg_type: int, xid: int, buf: bytes) -> None:
        if msg_type == ofp.OFPT_ECHO_REQUEST:
            self._writer.write(codec.echo_bytes(ofp.OFPT_ECHO_REPLY, xid, buf[codec.HEADER_SIZE:]))
            return
        if msg_type == ofp.OFPT_HELLO:
            if not self._hello.done():
                self._hello.set_result(buf[0])
            return
        if msg_type == ofp.OFPT_ERROR:
            self._on_error(xid, buf)
            return
        req = self._pending.get(xid)
        if req is None:
            if msg_type == ofp.OFPT_PORT_STATUS and self.on_port_status is not None:
                self.on_port_status(codec.parse(buf))
            elif msg_type == ofp.OFPT_FLOW_REMOVED and self.on_flow_removed is not None:
                self.on_flow_removed(*codec.flow_removed_counts(buf))
                return
            elif msg_type == ofp.OFPT_PACKET_IN and self.on_packet_in is not None:
                got = codec.packet_in(buf)
                if got is not None:
                    self.on_packet_in(got[0], got[1], asyncio.get_running_loop().time())
                    return
            self.ignored[msg_type] += 1
            return
        if req.multipart:
            req.parts.append(buf[_MP_HEADER:])
            _mp_type, flags = _MP_TYPE_FLAGS.unpack_from(buf, codec.HEADER_SIZE)
            if not flags & ofp.OFPMPF_REPLY_MORE and not req.future.done():
                req.future.set_result(req.parts)
            return
        if msg_type == ofp.OFPT_ECHO_REPLY:
            result: Any = asyncio.get_running_loop().time()  # its arrival: send_probes
        elif msg_type == ofp.OFPT_BARRIER_REPLY:
            result = None  # nothing to parse
        else:
            result = codec.parse(buf)
        if not req.future.done():
            req.future.set_result(result)

    def _on_error(self, xid: int, buf: bytes) -> None:
        msg = codec.parse(buf)
        text = codec.describe_error(msg)
        if self.on_error is not None:
            self.on_error(text)
        req = self._pending.get(xid)
        if req is not None and not req.future.done():
            req.future.set_exception(SouthboundError(f"switch {self.peer}: {text}"))
            return
        for batch in self._batches:
            if batch.first <= xid <= batch.last:
                batch.errors.append(f"xid {xid}: {text}")
                return
        log.warning("switch %s: unsolicited OpenFlow error (xid %d): %s", self.peer, xid, text)

    # -- keepalive -------------------------------------------------------------------------------

    async def _echo_loop(self) -> None:
        while self.state is ChannelState.READY:
            await asyncio.sleep(self.echo_interval)
            if self._batches:
                # The switch answers in order: an echo queued behind a big batch waits for the
                # whole batch. The batch has its own deadline, so don't misread that as death.
                continue
            xid, req = self._register()
            try:
                self._write([codec.echo_bytes(ofp.OFPT_ECHO_REQUEST, xid)])
                async with asyncio.timeout(self.echo_timeout):
                    await req.future
            except TimeoutError:
                self._close(f"no echo reply within {self.echo_timeout}s")
                return
            except SouthboundError:
                return
            finally:
                self._pending.pop(xid, None)

    def is_ready(self) -> bool:
        return self.state is ChannelState.READY

    async def send_probes(self, packet_outs: Sequence[bytes], timeout: float) -> float | None:
        """Write an echo request and then these packet-outs in one go; return when the echo's
        reply arrived (the loop's clock), None if it did not within `timeout`. The switch
        handles messages in order, so a probe's answer minus the echo's reply is the time the
        probe spent in the data path, without the control channel's own delay."""
        if not self.is_ready():
            return None
        xid, req = self._register()
        try:
            self._write([codec.echo_bytes(ofp.OFPT_ECHO_REQUEST, xid), *packet_outs])
            async with asyncio.timeout(timeout):
                return float(await req.future)
        except (TimeoutError, SouthboundError):
            return None
        finally:
            self._pending.pop(xid, None)

    async def alive(self, timeout: float) -> bool:
        """Does the switch still answer on this connection (an echo within timeout)?"""
        if not self.is_ready():
            return False
        xid, req = self._register()
        try:
            self._write([codec.echo_bytes(ofp.OFPT_ECHO_REQUEST, xid)])
            async with asyncio.timeout(timeout):
                await req.future
            return True
        except (TimeoutError, SouthboundError):
            return False
        finally:
            self._pending.pop(xid, None)
