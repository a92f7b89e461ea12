"""
Fault classes for ``bench/fault_suite.py``: each module tries hostile or broken inputs.

Every module in this package exposes ``run(cases: int, seed: int) -> FaultTally``:
it tries about ``cases`` inputs of its class (frames, HMI datagrams, policy
blobs, parameter files, bags, pool files, process kills), drawn from a
``random.Random(seed)`` or numpy generator, and counts what became of each.
"""

from dataclasses import dataclass, field
from typing import Dict


@dataclass
class FaultTally:
    """
    What became of the cases of one fault class.

    Attributes
    ----------
    name:
        The class, as printed in the table (e.g. 'CAN frames').
    cases:
        Inputs tried.
    clean_rejections:
        Inputs refused with a clear error or a counted, diagnosed rejection.
    accepted:
        Inputs that were valid (or harmless) and were taken.
    escaped:
        Inputs that raised an exception out of the boundary (a defect).
    data_lost:
        Acknowledged or valid data that was lost or silently changed (a defect).
    reasons:
        Rejections counted by reason.

    """

    name: str
    cases: int = 0
    clean_rejections: int = 0
    accepted: int = 0
    escaped: int = 0
    data_lost: int = 0
    reasons: Dict[str, int] = field(default_factory=dict)

    def reject(self, reason: str) -> None:
        """Count one clean rejection for reason."""
        self.cases += 1
        self.clean_rejections += 1
        self.reasons[reason] = self.reasons.get(reason, 0) + 1

    def accept(self) -> None:
        """Count one input that was taken."""
        self.cases += 1
        self.accepted += 1

    def escape(self, error: BaseException) -> None:
        """Count one exception that escaped the boundary."""
        self.cases += 1
        self.escaped += 1
        key = f'ESCAPED {type(error).__name__}'
        self.reasons[key] = self.reasons.get(key, 0) + 1

    def lose(self, count: int = 1) -> None:
        """Count data lost (in addition to the case's own verdict)."""
        self.data_lost += count
