"""
Aggregate /diagnostics per vehicle: the worst level per group, what is failing, what is stale.

``DiagnosticsAggregator`` is ROS-free: it takes any status objects with
``name``, ``level`` (int, or the 1-byte ``bytes`` rclpy uses for
diagnostic_msgs), ``message``, ``hardware_id`` and ``values`` (KeyValue-like,
with ``key`` and ``value``) and the receive time on a clock of the caller's
(a steady clock, so that a stopped simulation clock does not make everything
stale). A status's group is the first namespace segment of its name:
'/SIMVAN00000000001/can_bridge' is in group 'SIMVAN00000000001'; names without
a namespace ('/storage', 'storage') are in group 'other'.

``aggregated_array`` turns a summary into the DiagnosticArray published on
/diagnostics_agg: '/tspace' (overall) and one '/tspace/<group>' per group,
the layout rqt_robot_monitor shows as a tree.
"""

from dataclasses import dataclass
from typing import Dict, Iterable, Mapping, Optional, Tuple

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

OK, WARN, ERROR, STALE = 0, 1, 2, 3
LEVEL_NAMES = {OK: 'OK', WARN: 'WARN', ERROR: 'ERROR', STALE: 'STALE'}
OTHER_GROUP = 'other'
ROOT_NAME = '/tspace'


def level_int(level) -> int:
    """Return a diagnostic level as int (rclpy gives 1-byte bytes); ValueError if unknown."""
    if isinstance(level, (bytes, bytearray)):
        if len(level) != 1:
            raise ValueError(f'a diagnostic level is one byte, got {level!r}')
        level = level[0]
    level = int(level)
    if level not in LEVEL_NAMES:
        raise ValueError(f'unknown diagnostic level {level}')
    return level


def group_of(name: str) -> str:
    """Return the group of a status name: its first namespace segment, else 'other'."""
    segments = [segment for segment in name.strip().split('/') if segment]
    return segments[0] if len(segments) >= 2 else OTHER_GROUP


@dataclass(frozen=True)
class StatusRecord:
    """The latest status of one name, as received, and when (caller's clock, s)."""

    name: str
    level: int
    message: str
    hardware_id: str
    values: Tuple[Tuple[str, str], ...]
    received_s: float


@dataclass(frozen=True)
class MemberState:
    """One status as a summary sees it: level STALE (3) when not updated in time."""

    name: str
    level: int
    message: str
    age_s: float
    stale: bool


@dataclass(frozen=True)
class GroupSummary:
    """
    The state of one group.

    level is the worst member level (STALE counts as the worst), counts has
    every level name ('OK', 'WARN', 'ERROR', 'STALE') with how many members
    are at it, members are sorted by name.
    """

    group: str
    level: int
    counts: Mapping[str, int]
    members: Tuple[MemberState, ...]

    @property
    def problems(self) -> Tuple[str, ...]:
        """Return the names of the members at WARN, ERROR or STALE."""
        return tuple(member.name for member in self.members if member.level != OK)


@dataclass(frozen=True)
class Summary:
    """Every group at now_s and the overall level (STALE when nothing was heard yet)."""

    now_s: float
    level: int
    groups: Mapping[str, GroupSummary]


class DiagnosticsAggregator:
    """Keep the latest status per name; summarise per group with stale detection."""

    def __init__(self, stale_after_s: float = 5.0):
        """Statuses not updated for more than stale_after_s are STALE."""
        if not stale_after_s > 0:
            raise ValueError(f'stale_after_s must be > 0, got {stale_after_s}')
        self.stale_after_s = float(stale_after_s)
        self._latest: Dict[str, StatusRecord] = {}

    def update(self, status_list: Iterable, now_s: float) -> int:
        """
        Keep each status as the latest of its name, received at now_s.

        Returns how many were taken; a status with an unknown level is taken
        as ERROR (its message says so) rather than dropped.
        """
        taken = 0
        for status in status_list:
            message = str(getattr(status, 'message', ''))
            try:
                level = level_int(status.level)
            except (TypeError, ValueError) as error:
                level, message = ERROR, f'{error}; {message}'
            values = tuple((str(kv.key), str(kv.value)) for kv in getattr(status, 'values', ()))
            name = str(status.name)
            self._latest[name] = StatusRecord(name, level, message,
                                              str(getattr(status, 'hardware_id', '')),
                                              values, float(now_s))
            taken += 1
        return taken

    @property
    def names(self) -> Tuple[str, ...]:
        """Return every status name seen, sorted."""
        return tuple(sorted(self._latest))

    def latest(self, name: str) -> Optional[StatusRecord]:
        """Return the latest record of a name, or None."""
        return self._latest.get(name)

    def summary(self, now_s: float) -> Summary:
        """Return every group's state at now_s and the overall level."""
        members: Dict[str, list] = {}
        for name in sorted(self._latest):
            record = self._latest[name]
            age = float(now_s) - record.received_s
            stale = age > self.stale_after_s
            level = STALE if stale else record.level
            message = (f'no update for {age:.1f} s; last: {record.message}' if stale
                       else record.message)
            members.setdefault(group_of(name), []).append(
                MemberState(name, level, message, age, stale))
        groups = {}
        for group in sorted(members):
            states = tuple(members[group])
            counts = {label: sum(1 for m in states if m.level == level)
                      for level, label in LEVEL_NAMES.items()}
            groups[group] = GroupSummary(group, max(m.level for m in states), counts, states)
        overall = max((g.level for g in groups.values()), default=STALE)
        return Summary(float(now_s), overall, groups)


def _group_message(group: GroupSummary) -> str:
    if not group.problems:
        return f'{LEVEL_NAMES[OK]}: {len(group.members)} statuses'
    parts = []
    for level in (ERROR, STALE, WARN):
        names = [m for m in group.members if m.level == level]
        if names:
            parts.append(f'{LEVEL_NAMES[level]}: ' + ', '.join(
                f'{m.name} ({m.message})' if m.message else m.name for m in names))
    return '; '.join(parts)


def aggregated_array(summary: Summary, stamp) -> DiagnosticArray:
    """
    Return the DiagnosticArray for /diagnostics_agg.

    Statuses: '/tspace' (overall level; message naming the groups with
    problems; values: each group and its level), then '/tspace/<group>' per
    group (worst level; message listing the failing members with their
    messages; values: each member name and 'LEVEL: message').
    """
    statuses = []
    troubled = [g for g in summary.groups.values() if g.level != OK]
    if not summary.groups:
        root_message = 'no diagnostics received yet'
    elif troubled:
        root_message = 'problems in ' + ', '.join(
            f'{g.group} ({LEVEL_NAMES[g.level]}: {", ".join(g.problems)})' for g in troubled)
    else:
        root_message = f'all {len(summary.groups)} groups OK'
    root = DiagnosticStatus(level=bytes([summary.level]), name=ROOT_NAME,
                            message=root_message, hardware_id='tspace')
    root.values = [KeyValue(key=g.group, value=LEVEL_NAMES[g.level])
                   for g in summary.groups.values()]
    statuses.append(root)
    for group in summary.groups.values():
        status = DiagnosticStatus(level=bytes([group.level]), name=f'{ROOT_NAME}/{group.group}',
                                  message=_group_message(group), hardware_id=group.group)
        status.values = [
            KeyValue(key=m.name, value=LEVEL_NAMES[m.level] + (f': {m.message}' if m.message
                                                               else ''))
            for m in group.members]
        statuses.append(status)
    array = DiagnosticArray(status=statuses)
    array.header.stamp = stamp
    return array
