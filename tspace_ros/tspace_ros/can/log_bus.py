"""
A recorded drive as the vehicle's bus: python-can's log readers behind a can.BusABC.

Engineers have logs of their vehicles (Vector ASC and BLF, candump ``.log``,
PEAK TRC, python-can CSV, ASAM MDF4 bus logging through asammdf). ``LogBus``
plays one back as a read-only bus: at log speed (``rate`` 1; 2 = twice as
fast) or as fast as the reader takes it (``rate`` 0). Frames keep their
recorded capture times (absolute, also for ASC, whose trigger block names its
start), so windows are stamped in the log's time (the ASC header's time is
read as the reading machine's local time).
Sending is refused (a log cannot take a map), and so is a log that python-can
cannot read: ``LogBusError`` names the file and the reason.
"""

import pathlib
import time
from typing import Iterator, Optional

import can

FORMATS = ('.asc', '.blf', '.log', '.trc', '.csv', '.mf4')


class LogBusError(ValueError):
    """A log that cannot be played: missing, of an unknown format, or unreadable."""


def open_log_reader(path) -> Iterator[can.Message]:
    """Return python-can's reader of a log file; LogBusError for a missing or unknown one."""
    path = pathlib.Path(path)
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        raise LogBusError(f'{path}: unknown log format {suffix or "(none)"!r}; readable: '
                          f'{", ".join(FORMATS)}')
    if not path.is_file():
        raise LogBusError(f'{path}: no such log file')
    try:
        if suffix == '.asc':  # absolute capture times (the trigger block's start + offsets)
            return iter(can.ASCReader(str(path), relative_timestamp=False))
        return iter(can.LogReader(str(path)))
    except Exception as error:  # noqa: B902 - python-can's readers raise many kinds
        raise LogBusError(f'{path}: cannot read the log ({type(error).__name__}: '
                          f'{error})') from None


class LogBus(can.BusABC):
    """A read-only bus that plays a log file (see the module docstring)."""

    def __init__(self, channel, rate: float = 1.0, **kwargs):
        """Open the log ``channel`` (a file path); ``rate`` 0 plays as fast as possible."""
        if not rate >= 0:
            raise LogBusError(f'log rate must be >= 0, got {rate}')
        self.path = pathlib.Path(channel)
        self._reader = open_log_reader(self.path)
        self.rate = float(rate)
        self.channel_info = f'log {self.path} at {"full speed" if not rate else f"{rate:g}x"}'
        self.frames = 0
        self.unreadable = 0
        self.ended = False
        self._first: Optional[float] = None
        self._start = time.monotonic()
        self._next: Optional[can.Message] = None
        super().__init__(channel=str(channel), **kwargs)

    def _pull(self) -> Optional[can.Message]:
        if self._next is None and not self.ended:
            try:
                self._next = next(self._reader)
            except StopIteration:
                self.ended = True
            except Exception:  # noqa: B902 - a corrupt record ends the log, counted
                self.unreadable += 1
                self.ended = True
        return self._next

    def _recv_internal(self, timeout: Optional[float]):
        frame = self._pull()
        if frame is None:
            if timeout:
                time.sleep(min(timeout, 0.05))
            return None, False
        if self.rate > 0:
            if self._first is None:
                self._first, self._start = frame.timestamp, time.monotonic()
            due = self._start + (frame.timestamp - self._first) / self.rate
            wait = due - time.monotonic()
            if wait > 0:
                if timeout is not None and wait > timeout:
                    time.sleep(timeout)
                    return None, False
                time.sleep(wait)
        self._next = None
        self.frames += 1
        return frame, False

    def send(self, msg, timeout=None):
        """Refuse: a log is read-only."""
        raise can.CanOperationError(f'{self.channel_info} is read-only: nothing can be sent')

    def shutdown(self):
        """Close the reader."""
        stop = getattr(self._reader, 'stop', None)
        if stop is not None:
            stop()
        super().shutdown()
