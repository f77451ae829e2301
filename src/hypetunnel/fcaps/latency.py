"""Tunnel latency, measured through the data path (BFD tells whether a tunnel forwards, not
how fast).

Every interval the active controller writes to each switch, in one go, an echo request and
then one probe per tunnel port whose BFD session forwards: a small frame sent out of that
port with the probe key (compiler/pipeline.py). The switch at the other end sends it back
through the same tunnel as an answer, and the first switch hands the answer to the controller
(PACKET_IN). A switch handles its messages in order, so the answer's arrival minus the echo
reply's is the probe's time in the data path: out through the tunnel, the far switch, back
through the tunnel, up to the controller, without the control channel's own delay. A probe
that gets no answer within ANSWER_TIMEOUT takes its tunnel's figure away, as does BFD no
longer forwarding (then it is not probed): no figure rather than a stale one; the tunnel's
alarm says why.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import struct
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from hypetunnel.compiler.flows import Output, SetField
from hypetunnel.compiler.pipeline import PROBE_ANSWER, PROBE_ETH_TYPE, PROBE_KEY, PROBE_REQUEST
from hypetunnel.southbound.openflow.codec import packet_out_bytes

log = logging.getLogger(__name__)

PROBE_INTERVAL = 10.0  # seconds between two probes of a tunnel
ANSWER_TIMEOUT = 2.0  # a probe not answered within this is lost
STALE_AFTER = 3 * PROBE_INTERVAL  # a sample older than this is not reported
PROBE_SOURCE = "02:48:54:00:00:00"
_MAGIC = b"HTLP"
_FRAME = struct.Struct("!6s6sH4sQ")  # destination, source, EtherType, magic, sequence


def _mac(text: str) -> bytes:
    return bytes.fromhex(text.replace(":", ""))


def probe_frame(seq: int) -> bytes:
    return _FRAME.pack(_mac(PROBE_REQUEST), _mac(PROBE_SOURCE), PROBE_ETH_TYPE, _MAGIC, seq)


def answered_seq(frame: bytes) -> int | None:
    """The sequence number of a probe's answer; None for any other frame."""
    if len(frame) < _FRAME.size:
        return None
    dst, _src, eth_type, magic, seq = _FRAME.unpack_from(frame)
    if dst != _mac(PROBE_ANSWER) or eth_type != PROBE_ETH_TYPE or magic != _MAGIC:
        return None
    return int(seq)


@dataclass(frozen=True, slots=True)
class Tunnel:
    hypervisor: str
    remote: str
    encapsulation: str
    ofport: int  # the tunnel's OpenFlow port on `hypervisor`


@dataclass(frozen=True, slots=True)
class Sample:
    seconds: float
    at: float  # when it was taken (the loop's clock)


class ProbeChannel(Protocol):
    async def send_probes(self, packet_outs: Sequence[bytes], timeout: float) -> float | None:
        ...


class ProbePort(Protocol):
    @property
    def may_program(self) -> bool: ...

    def probe_targets(self) -> Iterable[tuple[ProbeChannel, list[Tunnel]]]:
        """Each switch this controller serves, with its tunnels whose BFD session forwards."""
        ...


def probe_out(seq: int, ofport: int) -> bytes:
    return packet_out_bytes(probe_frame(seq), (SetField("tunnel_id", PROBE_KEY), Output(ofport)))


class TunnelProber:
    def __init__(self, port: ProbePort, *, interval: float = PROBE_INTERVAL,
                 answer_timeout: float = ANSWER_TIMEOUT,
                 clock: Callable[[], float] | None = None) -> None:
        self._port = port
        self.interval = interval
        self.answer_timeout = answer_timeout
        self._clock = clock
        self._seq = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[float]] = {}
        self.samples: dict[tuple[str, str, str], Sample] = {}

    def _now(self) -> float:
        return self._clock() if self._clock else asyncio.get_running_loop().time()

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            if not self._port.may_program:
                self.samples.clear()  # the active controller's figures, not a standby's
                continue
            try:
                await self.probe_all()
            except Exception:  # a bug must not end the task: the next interval tries again
                log.exception("tunnel latency probes failed")

    async def probe_all(self) -> None:
        targets = [(channel, tunnels) for channel, tunnels in self._port.probe_targets()
                   if tunnels]
        probed = {(t.hypervisor, t.remote, t.encapsulation) for _, ts in targets for t in ts}
        for key in [k for k in self.samples if k not in probed]:
            del self.samples[key]  # not forwarding (BFD), or gone: no latency to tell
        await asyncio.gather(*(self.probe_switch(channel, tunnels)
                               for channel, tunnels in targets))

    async def probe_switch(self, channel: ProbeChannel, tunnels: list[Tunnel]) -> None:
        loop = asyncio.get_running_loop()
        seqs = [next(self._seq) for _ in tunnels]
        answers = {seq: loop.create_future() for seq in seqs}
        self._waiting.update(answers)
        try:
            echoed = await channel.send_probes(
                [probe_out(seq, t.ofport) for seq, t in zip(seqs, tunnels, strict=True)],
                self.answer_timeout)
            if echoed is None:
                return  # the channel is gone or stalled: its own alarm says so
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.answer_timeout):
                    await asyncio.wait(answers.values())
            for seq, t in zip(seqs, tunnels, strict=True):
                answer, key = answers[seq], (t.hypervisor, t.remote, t.encapsulation)
                if answer.done() and not answer.cancelled():
                    self.samples[key] = Sample(max(0.0, answer.result() - echoed), self._now())
                else:
                    self.samples.pop(key, None)  # lost: the figure would be a stale one
        finally:
            for seq in seqs:
                self._waiting.pop(seq, None)
                answers[seq].cancel()

    def received(self, frame: bytes, at: float) -> None:
        """A PACKET_IN from a switch (at: its arrival, the loop's clock)."""
        seq = answered_seq(frame)
        waiting = self._waiting.pop(seq, None) if seq is not None else None
        if waiting is not None and not waiting.done():
            waiting.set_result(at)

    def latencies(self) -> list[tuple[str, str, str, float]]:
        """(hypervisor, remote, encapsulation, seconds) of every tunnel with a fresh sample."""
        now = self._now()
        return sorted((*key, s.seconds) for key, s in self.samples.items()
                      if now - s.at <= STALE_AFTER)
