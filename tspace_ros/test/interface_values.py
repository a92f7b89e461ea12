"""
Fill every field of any ROS 2 message with distinct non-default values, and compare.

Driven by the generated classes' own introspection (SLOT_TYPES), so a field
added to a .msg/.srv/.action is covered without touching the tests.
"""

import itertools

from rosidl_parser import definition

_INTEGER_RANGES = {
    'int8': (-128, 127), 'uint8': (0, 255), 'int16': (-2**15, 2**15 - 1),
    'uint16': (0, 2**16 - 1), 'int32': (-2**31, 2**31 - 1), 'uint32': (0, 2**32 - 1),
    'int64': (-2**63, 2**63 - 1), 'uint64': (0, 2**64 - 1),
    'short': (-2**15, 2**15 - 1), 'unsigned short': (0, 2**16 - 1),
    'long': (-2**31, 2**31 - 1), 'unsigned long': (0, 2**32 - 1),
    'long long': (-2**63, 2**63 - 1), 'unsigned long long': (0, 2**64 - 1),
}
SEQUENCE_LENGTH = 3


def _basic_value(typename: str, k: int):
    if typename == 'boolean':
        return True
    if typename in ('octet', 'byte'):
        return bytes([1 + k % 250])
    if typename == 'char':
        return chr(ord('a') + k % 26)
    if typename in ('float', 'double', 'long double'):
        return float(k % 10000) + 0.25  # exactly representable in float32
    low, high = _INTEGER_RANGES[typename]
    value = 1 + k % min(high, 10**6)
    return -value if low < 0 and k % 2 else value


def _import_type(namespaced: definition.NamespacedType):
    module = __import__('.'.join(namespaced.namespaces), fromlist=[namespaced.name])
    return getattr(module, namespaced.name)


def _value(slot_type, counter):
    if isinstance(slot_type, definition.BasicType):
        return _basic_value(slot_type.typename, next(counter))
    if isinstance(slot_type, definition.AbstractGenericString):
        text = f's{next(counter)}'
        if getattr(slot_type, 'has_maximum_size', lambda: False)():
            text = text[:slot_type.maximum_size]
        return text
    if isinstance(slot_type, definition.NamespacedType):
        return fill(_import_type(slot_type)(), counter)
    if isinstance(slot_type, definition.Array):
        return [_value(slot_type.value_type, counter) for _ in range(slot_type.size)]
    if isinstance(slot_type, definition.AbstractSequence):
        length = SEQUENCE_LENGTH
        if isinstance(slot_type, definition.BoundedSequence):
            length = min(length, slot_type.maximum_size)
        values = [_value(slot_type.value_type, counter) for _ in range(length)]
        if isinstance(slot_type.value_type, definition.BasicType) and \
                slot_type.value_type.typename in ('octet', 'byte'):
            return [v[0] for v in values] if slot_type.value_type.typename == 'octet' \
                else values
        return values
    raise TypeError(f'no filler for {slot_type!r}')


def fill(msg, counter=None):
    """Set every field of msg (recursively) to a distinct non-default value; return msg."""
    counter = counter if counter is not None else itertools.count(1)
    for field, slot_type in zip(msg.get_fields_and_field_types(), msg.SLOT_TYPES):
        setattr(msg, field, _value(slot_type, counter))
    return msg


def differences(a, b, path=''):
    """List the field paths where two messages of the same type differ."""
    if not hasattr(a, 'get_fields_and_field_types'):
        return [] if a == b else [path or '<value>']
    out = []
    for field in a.get_fields_and_field_types():
        va, vb = getattr(a, field), getattr(b, field)
        sub = f'{path}.{field}' if path else field
        if hasattr(va, 'get_fields_and_field_types'):
            out += differences(va, vb, sub)
        elif isinstance(va, list) and va and hasattr(va[0], 'get_fields_and_field_types'):
            if len(va) != len(vb):
                out.append(f'{sub} (length {len(va)} != {len(vb)})')
            else:
                for i, (xa, xb) in enumerate(zip(va, vb)):
                    out += differences(xa, xb, f'{sub}[{i}]')
        elif differences_value(va, vb):
            out.append(sub)
    return out


def _is_sequence(value):
    return not isinstance(value, (str, bytes)) and hasattr(value, '__len__')


def default_valued_fields(msg, path=''):
    """List the leaf fields of msg that still hold their type's default value."""
    default = type(msg)()
    out = []
    for field in msg.get_fields_and_field_types():
        value = getattr(msg, field)
        sub = f'{path}.{field}' if path else field
        if hasattr(value, 'get_fields_and_field_types'):
            out += default_valued_fields(value, sub)
        elif isinstance(value, list) and value and \
                hasattr(value[0], 'get_fields_and_field_types'):
            for i, item in enumerate(value):
                out += default_valued_fields(item, f'{sub}[{i}]')
        elif not differences_value(value, getattr(default, field)):
            out.append(sub)
    return out


def differences_value(a, b) -> bool:
    """Whether two field values differ (sequences compared element-wise)."""
    if _is_sequence(a) or _is_sequence(b):
        return list(a) != list(b)
    return a != b
