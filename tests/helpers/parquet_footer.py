"""A Parquet footer as a tree, to rewrite what it claims: the Thrift compact protocol, decoded and encoded back
byte for byte. Structs are lists of ``[field id, type, value]``; lists are ``("list", element type, items)``."""
from __future__ import annotations

import struct

STRUCT, LIST, SET = 12, 9, 10
INTEGERS = (3, 4, 5, 6)  # byte, i16, i32, i64


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    shift = result = 0
    while True:
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def _unzigzag(number: int) -> int:
    return (number >> 1) ^ -(number & 1)


def _encode_varint(number: int) -> bytes:
    out = bytearray()
    while True:
        low, number = number & 0x7F, number >> 7
        if not number:
            out.append(low)
            return bytes(out)
        out.append(low | 0x80)


def _encode_zigzag(number: int) -> bytes:
    return _encode_varint((number << 1) ^ (number >> 63))


def _read_value(data: bytes, pos: int, kind: int):
    if kind in (1, 2):
        return kind == 1, pos
    if kind == 3:
        return struct.unpack_from("b", data, pos)[0], pos + 1
    if kind in (4, 5, 6):
        number, pos = _varint(data, pos)
        return _unzigzag(number), pos
    if kind == 7:
        return struct.unpack_from("<d", data, pos)[0], pos + 8
    if kind == 8:
        size, pos = _varint(data, pos)
        return bytes(data[pos:pos + size]), pos + size
    if kind in (LIST, SET):
        head = data[pos]
        pos += 1
        size, element = head >> 4, head & 0x0F
        if size == 15:
            size, pos = _varint(data, pos)
        items = []
        for _ in range(size):
            if element in (1, 2):
                items.append(data[pos] == 1)
                pos += 1
            else:
                item, pos = _read_value(data, pos, element)
                items.append(item)
        return ("list", element, items), pos
    if kind == STRUCT:
        return read_struct(data, pos)
    raise ValueError(f"Thrift type {kind}")


def read_struct(data: bytes, pos: int):
    fields, last = [], 0
    while True:
        head = data[pos]
        pos += 1
        if head == 0:
            return fields, pos
        delta, kind = head >> 4, head & 0x0F
        if delta:
            number = last + delta
        else:
            raw, pos = _varint(data, pos)
            number = _unzigzag(raw)
        value, pos = _read_value(data, pos, kind)
        fields.append([number, kind, value])
        last = number


def _write_value(kind: int, value) -> bytes:
    if kind in (1, 2):
        return b""
    if kind == 3:
        return struct.pack("b", value)
    if kind in (4, 5, 6):
        return _encode_zigzag(value)
    if kind == 7:
        return struct.pack("<d", value)
    if kind == 8:
        return _encode_varint(len(value)) + value
    if kind in (LIST, SET):
        _, element, items = value
        head = bytes([(len(items) << 4) | element]) if len(items) < 15 else bytes([0xF0 | element]) + \
            _encode_varint(len(items))
        return head + b"".join((b"\x01" if item else b"\x02") if element in (1, 2) else _write_value(element, item)
                               for item in items)
    if kind == STRUCT:
        return write_struct(value)
    raise ValueError(f"Thrift type {kind}")


def write_struct(fields) -> bytes:
    out, last = bytearray(), 0
    for number, kind, value in fields:
        if kind in (1, 2):
            kind = 1 if value else 2
        delta = number - last
        if 0 < delta <= 15:
            out.append((delta << 4) | kind)
        else:
            out.append(kind)
            out += _encode_zigzag(number)
        out += _write_value(kind, value)
        last = number
    out.append(0)
    return bytes(out)


def footer(data: bytes):
    """The FileMetaData of a Parquet file's bytes, as a tree."""
    size = struct.unpack_from("<I", data, len(data) - 8)[0]
    tree, end = read_struct(data, len(data) - 8 - size)
    assert end == len(data) - 8
    return tree


def with_footer(data: bytes, tree) -> bytes:
    """The file with its footer replaced by ``tree`` (its length field rewritten to match)."""
    size = struct.unpack_from("<I", data, len(data) - 8)[0]
    body = write_struct(tree)
    return data[:len(data) - 8 - size] + body + struct.pack("<I", len(body)) + b"PAR1"


def integer_fields(tree, path=(), kinds=INTEGERS):
    """Every integer in the tree as (path, value); ``set_at(tree, path, value)`` changes it."""
    found = []
    for index, (_, kind, value) in enumerate(tree):
        here = path + (index,)
        if kind in kinds:
            found.append((here, value))
        elif kind == STRUCT:
            found.extend(integer_fields(value, here, kinds))
        elif kind in (LIST, SET) and value[1] == STRUCT:
            for position, item in enumerate(value[2]):
                found.extend(integer_fields(item, here + (position,), kinds))
    return found


def binary_fields(tree):
    """Every string or binary in the tree (names, statistics' min and max, key-value metadata) as (path, value)."""
    return integer_fields(tree, kinds=(8,))


def set_at(tree, path, value) -> None:
    node = tree
    steps = list(path)
    while len(steps) > 1:
        entry = node[steps.pop(0)]
        node = entry[2][2][steps.pop(0)] if entry[1] in (LIST, SET) else entry[2]
    node[steps[0]][2] = value


def field(tree, *numbers):
    """The value at field ids ``numbers`` (a list's items are indexed by position after its field id)."""
    node = tree
    for number in numbers:
        if isinstance(node, tuple):
            node = node[2][number]
        else:
            node = next(entry[2] for entry in node if entry[0] == number)
    return node


def set_field(fields, number: int, value) -> None:
    """Set field ``number`` of a struct (as ``field`` returns it)."""
    next(entry for entry in fields if entry[0] == number)[2] = value


def with_page_claim(data: bytes, uncompressed: int) -> bytes:
    """A one-column, one-page file (``data``) whose page header claims ``uncompressed`` bytes once decompressed;
    the offsets after it move with the header."""
    tree = footer(data)
    meta = field(tree, 4, 0, 1, 0, 3)
    start = field(meta, 9)  # data_page_offset
    header, end = read_struct(data, start)
    set_field(header, 2, uncompressed)  # uncompressed_page_size
    encoded = write_struct(header)
    set_field(meta, 7, field(meta, 7) + len(encoded) - (end - start))  # total_compressed_size
    size = struct.unpack_from("<I", data, len(data) - 8)[0]
    body = write_struct(tree)
    return data[:start] + encoded + data[end:len(data) - 8 - size] + body + struct.pack("<I", len(body)) + b"PAR1"
