"""
``CloudLink``: a vehicle behind tspace's telematics cloud, as a ``VehicleLink``.

The bridge core (``bridge.core.BridgeCore``) owns the gate, the active and
last good map, time-outs, offline detection, the watchdog and the episodes;
this link owns the transport only:

- reading: a thread polls ``get_signal`` (the last ``signal_duration_s`` s)
  every ``poll_period_s``, or reads the seconds the TBox uploaded to object
  storage (``source``: ``object_batches.ObjectBatchSource``);
  ``batches.BatchDecoder`` keeps the seconds not taken before; ``take_samples``
  hands them to the core as ``Sample``s (``get_signal.<list>``, routed by the
  cloud signal mapping). Polls are the
  vehicle side's sign of life: the TBox falls back to the default map when
  they stop;
- writing: ``write`` sends only the admitted map's changed rows with
  ``set_torque`` (``abswitch``: write the B page, then switch), in a thread
  of its own so that a flash of seconds never stalls the windows; its typed
  outcome comes back through ``take_outcome``. ``set_torque`` is never
  retried. ``restore`` writes the default map's values over the rows where the
  last map written differs from the default (all rows when that is not known):
  the cloud has no revert command;
- outcomes: success -> ACCEPTED (the cloud reports no map checksum: the map is
  the one written); a flash or data code (2000-2005), AI mode off, a bad
  parameter -> a refusal (the vehicle kept its map); a time-out (1002, 301)
  -> NO_ACK and a transport failure -> LINK_ERROR, after which the map the
  vehicle holds is in doubt and the core restores the default. The message
  names the RemoteCAN code; counts per code are in ``stats``.
"""

from collections import Counter, deque
import math
import threading
import time
from typing import Callable, Deque, Dict, List, Optional, Tuple

from tspace_ros.can.links import LinkWrite
from tspace_ros.can.transfer import TransferOutcome, TransferStatus, whole_map_checksum
from tspace_ros.cloud.batches import BatchDecoder, MESSAGE
from tspace_ros.cloud.client import RemoteCanClient
from tspace_ros.cloud.remote_can import MAX_SIGNAL_DURATION_S, RemoteCode, RemoteReply
from tspace_ros.torque_map.map import TorqueMap

# Codes after which the vehicle certainly kept the map it had.
REFUSALS = frozenset({RemoteCode.UDS_VERSION, RemoteCode.AB_SWITCH_FAILED,
                      RemoteCode.NOT_ENOUGH_DATA, RemoteCode.TORQUE_SHAPE,
                      RemoteCode.TORQUE_RANGE, RemoteCode.UNKNOWN_FORMAT,
                      RemoteCode.AI_MODE_OFF, RemoteCode.BAD_PARAMETER, RemoteCode.NO_API,
                      RemoteCode.CAR_NOT_REGISTERED, RemoteCode.CAR_OFFLINE})
TIMEOUTS = frozenset({RemoteCode.TIMEOUT, RemoteCode.OUT_OF_TIME})
MAX_QUEUED_SAMPLES = 200_000


def outcome_of(reply: RemoteReply, transfer_id: int, version: int,
               written: TorqueMap) -> TransferOutcome:
    """Return the transfer outcome of a set_torque reply (see the module docstring)."""
    if reply.ok:
        return TransferOutcome(transfer_id, TransferStatus.ACCEPTED, version, 0,
                               whole_map_checksum(written), detail='cloud: set_torque ok')
    detail = f'cloud: set_torque: RemoteCAN {int(reply.code)} {reply.code.name.lower()}: ' \
             f'{reply.message}'
    if reply.code in TIMEOUTS:
        status = TransferStatus.NO_ACK
    elif reply.code in REFUSALS:
        status = TransferStatus.APPLY_FAILED
    else:
        status = TransferStatus.LINK_ERROR
    return TransferOutcome(transfer_id, status, None, 0, 0, detail=detail)


class CloudLink:
    """The cloud transport of one vehicle (see the module docstring)."""

    name = 'cloud'
    writes_maps = True
    reports_status = False
    resolution_nm = 0.0   # JSON floats: values travel as admitted

    def __init__(self, client: RemoteCanClient, decoder: BatchDecoder,
                 map_shape: Tuple[int, int], poll_period_s: float = 2.0,
                 signal_duration_s: int = 4, abswitch: bool = True,
                 wall: Callable[[], float] = time.time, source=None,
                 max_signal_duration_s: int = 30):
        """
        Take the client, the batch decoder and the map's shape; start nothing yet.

        Each get_signal asks for signal_duration_s seconds, or, when the newest second
        taken is older than that (a failed or slow read), for the seconds since it plus
        one, up to max_signal_duration_s: the seconds in between are not lost (the
        overlap is recognised and not taken twice).

        source: where the signals come from when not from get_signal: an object with
        ``fetch() -> RemoteReply`` (``object_batches.ObjectBatchSource``, the TBox's
        uploads in object storage) and ``stats()``.
        """
        if not 0.05 <= poll_period_s <= 60:
            raise ValueError(f'poll_period_s must be 0.05..60 s, got {poll_period_s}')
        self.client, self.decoder, self.source = client, decoder, source
        self._read_name = 'objects' if source is not None else 'get_signal'
        self.map_shape = (int(map_shape[0]), int(map_shape[1]))
        self.poll_period_s, self.signal_duration_s = float(poll_period_s), signal_duration_s
        if not 1 <= signal_duration_s <= max_signal_duration_s <= MAX_SIGNAL_DURATION_S:
            raise ValueError(f'signal durations must be 1 <= signal_duration_s '
                             f'({signal_duration_s}) <= max_signal_duration_s '
                             f'({max_signal_duration_s}) <= {MAX_SIGNAL_DURATION_S}')
        self.max_signal_duration_s = int(max_signal_duration_s)
        self.abswitch = bool(abswitch)
        self.ack_timeout_s = client.flash_timeout_s
        self._wall = wall
        self._lock = threading.Lock()
        self._samples: Deque = deque()
        self._outcome: Optional[TransferOutcome] = None
        self._written: Optional[TorqueMap] = None   # the map the last write asked for
        self._writer: Optional[threading.Thread] = None
        self._stop = threading.Event()
        self._reader: Optional[threading.Thread] = None
        self.counts: Counter = Counter()
        self.last_reply: Dict[str, str] = {}
        self.last_batch_ns = 0
        self._rate = 1.0          # the vehicle's seconds per monotonic second (estimated)
        self._last_batch_mono = 0.0
        self._reads_s: Deque[float] = deque(maxlen=8)   # how long the last reads took, s

    # ---- reading ---------------------------------------------------------------------------
    def start(self) -> None:
        """Start polling get_signal."""
        if self._reader is None:
            self._stop.clear()
            self._reader = threading.Thread(target=self._poll_loop, name='cloud_link_reader',
                                            daemon=True)
            self._reader.start()

    def stop(self) -> None:
        """Stop polling (start() polls again); a write in flight goes on."""
        self._stop.set()
        if self._reader is not None:
            self._reader.join(timeout=self.client.timeout_s + 1.0)
            self._reader = None

    def _poll_loop(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            self.poll_once()
            self._stop.wait(max(0.0, self.poll_period_s - (time.monotonic() - started)))

    def poll_once(self) -> int:
        """Fetch and decode one get_signal; return the samples queued."""
        started = time.monotonic()
        reply = self.source.fetch() if self.source is not None else \
            self.client.get_signal(self.duration_to_ask())
        self._reads_s.append(time.monotonic() - started)
        self.counts[f'{self._read_name}_{int(reply.code)}'] += 1
        self.last_reply[self._read_name] = f'{int(reply.code)} {reply.message}'[:200]
        if not reply.ok:
            return 0
        batch = self.decoder.decode(reply.result, int(self._wall() * 1e9))
        queued = 0
        with self._lock:
            for t, frame in batch.samples:
                for signal, value in frame.items():
                    if len(self._samples) >= MAX_QUEUED_SAMPLES:
                        self.counts['samples_dropped_queue_full'] += 1
                        continue
                    self._samples.append((f'{MESSAGE}.{signal}', t, value))
                    queued += 1
            if batch.samples:
                first_ns, newest_ns = batch.samples[0][0], batch.samples[-1][0]
                now_mono = time.monotonic()
                if self.last_batch_ns:
                    missed = (first_ns - self.last_batch_ns) / 1e9 - 1.0
                    if missed > 0:   # seconds the vehicle had that no read brought
                        self.counts['seconds_missed'] += math.ceil(missed)
                    elapsed = now_mono - self._last_batch_mono
                    if elapsed > 0.01:
                        rate = max(0.0, (newest_ns - self.last_batch_ns) / 1e9) / elapsed
                        # Up at once, down slowly: asking too much costs bytes, too
                        # little loses seconds (and a parked vehicle's pause says little).
                        self._rate = min(1000.0, rate if rate > self._rate else
                                         0.8 * self._rate + 0.2 * rate)
                self.last_batch_ns, self._last_batch_mono = newest_ns, now_mono
        return queued

    def duration_to_ask(self) -> int:
        """Return the seconds the next get_signal asks for (see __init__)."""
        duration = self.signal_duration_s
        if self.last_batch_ns:
            # How far the vehicle will be ahead of the newest second taken when it
            # answers: by this node's clock, and by the vehicle's own clock's pace (its
            # seconds per monotonic second over the last reads: 1 on the road, N for a van
            # simulated N times faster) since that second came plus the slowest of the
            # last reads, with a quarter and a second to spare (reads vary).
            read_s = max(self._reads_s, default=0.0)
            ahead_s = time.monotonic() - self._last_batch_mono + read_s
            behind = max(self._wall() - self.last_batch_ns / 1e9 + read_s,
                         1.25 * self._rate * ahead_s + 1.0)
            if behind + 1 > duration:
                duration = min(self.max_signal_duration_s, math.ceil(behind) + 1)
                self.counts['catch_up_reads'] += 1
        return duration

    def take_samples(self) -> List[Tuple[str, int, float]]:
        """Return (and forget) the samples read since the last call, oldest first."""
        with self._lock:
            samples, self._samples = list(self._samples), deque()
        return samples

    # ---- VehicleLink -----------------------------------------------------------------------
    def on_frame(self, frame):
        """Return nothing: the cloud's answers do not come as CAN frames."""
        return None, None, False

    def _start_write(self, rows, start_line: int, transfer_id: int, version: int,
                     flashed: TorqueMap) -> None:
        def run():
            try:
                reply = self.client.set_torque(rows, start_line, self.map_shape, self.abswitch)
            except ValueError as error:  # the request itself was refused before sending
                reply = RemoteReply(RemoteCode.BAD_PARAMETER, str(error), http_status=0)
            self.counts[f'set_torque_{int(reply.code)}'] += 1
            self.last_reply['set_torque'] = f'{int(reply.code)} {reply.message}'[:200]
            with self._lock:
                self._outcome = outcome_of(reply, transfer_id, version, flashed)
        with self._lock:
            self._outcome = None
        self._writer = threading.Thread(target=run, name='cloud_link_writer', daemon=True)
        self._writer.start()

    def write(self, admitted: TorqueMap, row_start: int, row_count: int, transfer_id: int,
              version: int) -> LinkWrite:
        """Send the admitted map's rows row_start.. with set_torque (in a thread)."""
        if admitted.shape != self.map_shape:
            raise ValueError(f'the map is {admitted.shape}, the vehicle holds {self.map_shape}')
        rows = admitted.torque_nm[row_start:row_start + row_count]
        self._written = admitted
        self._start_write(rows, row_start, transfer_id, version, admitted)
        return LinkWrite(transfer_id, version, (), admitted)

    def restore(self, default_map: TorqueMap, transfer_id: int) -> LinkWrite:
        """Write the default's values where the last map written differs (all if unknown)."""
        written = self._written
        if written is None or written.shape != default_map.shape:
            first, last = 0, default_map.shape[0] - 1
        else:
            changed = [i for i in range(default_map.shape[0])
                       if (written.torque_nm[i] != default_map.torque_nm[i]).any()]
            first, last = (changed[0], changed[-1]) if changed else (0, default_map.shape[0] - 1)
        self._written = default_map
        self._start_write(default_map.torque_nm[first:last + 1], first, transfer_id, 0,
                          default_map)
        return LinkWrite(transfer_id, 0, (), default_map)

    def take_outcome(self) -> Optional[TransferOutcome]:
        """Return (once) the outcome of the last write or restore, when it is done."""
        with self._lock:
            outcome, self._outcome = self._outcome, None
        return outcome

    def commit_sent(self, now_s: float) -> None:
        """Do nothing: the write goes out by itself."""

    def overdue(self, now_s: float) -> bool:
        """Return False: the client's own time-out ends a write (as NO_ACK)."""
        return False

    def cancel(self) -> None:
        """Forget the pending outcome (the HTTP call, once sent, cannot be taken back)."""
        with self._lock:
            self._outcome = None

    def heartbeat(self, counter: int, version: int, checksum: int):
        """Return None: the polls are the sign of life."""
        return None

    def stats(self) -> Dict[str, object]:
        """Return the link's counters, the client's latencies and the decoder's problems."""
        out: Dict[str, object] = dict(self.counts)
        out.update({f'last_{call}': text for call, text in self.last_reply.items()})
        out.update(self.client.stats())
        out.update({f'batch_{k}': v for k, v in self.decoder.problems.items()})
        if self.source is not None:
            out.update(self.source.stats())
        out.update({f'fill_{k}': round(v, 3) for k, v in self.decoder.fill_ratio().items()})
        if self.last_batch_ns:
            out['data_age_s'] = round(self._wall() - self.last_batch_ns / 1e9, 3)
        return out

    def close(self) -> None:
        """Stop polling; wait for a write in flight to end (its outcome is kept)."""
        self.stop()
        if self._writer is not None:
            self._writer.join(timeout=self.client.flash_timeout_s + 1.0)
        self.client.close()
