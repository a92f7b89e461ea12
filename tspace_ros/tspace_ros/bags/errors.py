"""The one error class of ``tspace_ros.bags``."""


class BagError(ValueError):
    """
    A bag that cannot be written or read; the message says which file and why.

    ``kind`` sorts the problem: 'missing' (no bag, file or metadata.yaml),
    'metadata' (metadata.yaml unreadable, hostile or of the wrong types),
    'structure' (a truncated, garbage or malformed storage file), 'crc' (a
    checksum that does not match: corrupt data), 'mismatch' (metadata.yaml,
    the summary and the data disagree), 'type' (a message type nobody knows),
    'topic' (a topic not in the bag), 'write' (recording) or 'invalid'.
    """

    def __init__(self, message: str, kind: str = 'invalid'):
        """Keep the message (what str() gives) and the kind of problem."""
        super().__init__(message)
        self.kind = kind
