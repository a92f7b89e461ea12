"""Build diagnostic_msgs messages for /diagnostics from plain values."""

from typing import Mapping

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

OK, WARN, ERROR, STALE = (DiagnosticStatus.OK, DiagnosticStatus.WARN, DiagnosticStatus.ERROR,
                          DiagnosticStatus.STALE)


def diagnostic_array(stamp, name: str, hardware_id: str, level: bytes, message: str,
                     values: Mapping[str, object]) -> DiagnosticArray:
    """Return a DiagnosticArray with one status; values become KeyValue strings."""
    status = DiagnosticStatus(level=level, name=name, message=message, hardware_id=hardware_id)
    status.values = [KeyValue(key=str(key), value=_text(value)) for key, value in values.items()]
    array = DiagnosticArray()
    array.header.stamp = stamp
    array.status = [status]
    return array


def _text(value) -> str:
    if isinstance(value, float):
        return f'{value:.6g}'
    return str(value)
