"""
The simulated van's side of its CAN bus, read as frames arrive (a thread of its own).

A real VCU's XCP driver answers each command when its frame arrives, within
microseconds, whatever the control loop is doing. The simulation advances in
steps (vehicle_sim: ``step_s`` of simulated time per timer tick, 12.5 ms of wall
time at 40x): a slave that answered only at the next step would make every XCP
command wait up to a whole tick, and a flash of a dozen round trips would take
several simulated seconds. ``VanBusReader`` reads the bus in a thread of its own:

- XCP commands (the slave's master -> slave id, ``CanVehicle.is_xcp``) are answered
  at once through ``CanVehicle.receive``, under the vehicle's lock: never in the
  middle of a simulation step, so a page switch takes effect in the VCU between
  two steps, as a map accepted over the transfer protocol does;
- every other frame (MapSegment, MapCommit, MapRevert, BridgeHeartbeat, ...) waits
  for the next step: ``take()`` returns them in arrival order (the VCU's map
  receiver works in simulated time, once per step).

Whoever steps the simulation holds ``vehicle.lock`` for the whole step (receive,
advance, send the step's frames, publish the clock), so an XCP answer goes out
either before or after a step's frames, never between them. Bus errors are
counted; the thread never raises.
"""

from collections import deque
import threading
import time
from typing import Callable, Deque, List, Optional

import can

RECV_TIMEOUT_S = 0.05
"""Longest wait for a frame, s (how soon the thread sees a stop)."""

MAX_QUEUED = 100_000
"""Frames kept for the next step at most (the oldest go first; counted as dropped)."""

ERROR_BACKOFF_S = 0.01
"""Pause after a failed receive, s (a bus that keeps failing does not spin the CPU)."""


class VanBusReader:
    """Reads the van's bus in a thread; answers XCP at once, keeps the rest for the step."""

    def __init__(self, bus: can.BusABC, vehicle_of: Callable[[], Optional[object]],
                 name: str = 'van_bus_reader'):
        """
        Start reading ``bus``; ``vehicle_of()`` is the CanVehicle that answers (or None).

        A callable rather than the vehicle itself: the owner may replace its vehicle
        (frames that arrive while there is none wait for the step).
        """
        self.bus = bus
        self._vehicle_of = vehicle_of
        self._queue: Deque[can.Message] = deque()
        self._queue_lock = threading.Lock()
        self._stop = threading.Event()
        self.frames_read = 0
        self.xcp_answered = 0
        self.dropped = 0
        self.errors = 0
        self.last_error = ''
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def take(self) -> List[can.Message]:
        """Return (and forget) the frames that wait for the simulation step, oldest first."""
        with self._queue_lock:
            frames = list(self._queue)
            self._queue.clear()
        return frames

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                frame = self.bus.recv(timeout=RECV_TIMEOUT_S)
            except Exception as error:  # noqa: B902 - a driver may raise anything
                self._count_error(error)
                self._stop.wait(ERROR_BACKOFF_S)
                continue
            if frame is None:
                continue
            self.frames_read += 1
            vehicle = self._vehicle_of()
            if vehicle is not None and vehicle.is_xcp(frame):
                self._answer(vehicle, frame)
                continue
            with self._queue_lock:
                if len(self._queue) >= MAX_QUEUED:
                    self._queue.popleft()
                    self.dropped += 1
                self._queue.append(frame)

    def _answer(self, vehicle, frame: can.Message) -> None:
        """Answer one XCP command now, between two simulation steps."""
        try:
            with vehicle.lock:
                for answer in vehicle.receive([frame]):
                    self.bus.send(answer)
                    self.xcp_answered += 1
        except Exception as error:  # noqa: B902 - the reader must keep reading
            self._count_error(error)

    def _count_error(self, error: Exception) -> None:
        self.errors += 1
        self.last_error = f'{type(error).__name__}: {error}'

    @property
    def running(self) -> bool:
        """Whether the thread still reads the bus."""
        return self._thread.is_alive()

    def stop(self, timeout_s: float = 2.0) -> bool:
        """Stop reading (the bus stays open); return whether the thread ended in time."""
        self._stop.set()
        deadline = time.monotonic() + timeout_s
        self._thread.join(max(deadline - time.monotonic(), 0.0))
        return not self._thread.is_alive()
