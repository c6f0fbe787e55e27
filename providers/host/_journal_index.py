"""A journal query's matches counted from the journal files' own indexes.

journalctl has no count: it can only list the matches, and listing 100,000 of them
costs it a few hundred milliseconds. The files already hold the answer. Each distinct
`FIELD=value` is one DATA object that records how many entries hold it and links to them
in arrays sorted by position (`docs/JOURNAL_FILE_FORMAT.md` in systemd), so a filter's
count is set arithmetic on those arrays, and a time window two bisections of each (the
entries of a file are in time order, which journalctl's own `--since` relies on too).

This reader reads what it needs and no more, and mirrors journalctl's matching
(`--unit` is `add_matches_for_unit` of systemd's logs-show.c, `--priority` the priorities
up to the one given). Anything it does not know raises `Unsupported` and the caller
counts with journalctl's walk instead: a file format flag it has not met, a compressed
value where it compares values, an offset out of place (a file being rotated, or
damaged). systemd asks readers to prefer its C API; that API has no count either, and
reading its entries one call at a time from Python is slower than journalctl.
"""

from __future__ import annotations

import bisect
import itertools
import mmap
import re
import struct
import sys
from array import array
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TypeAlias

SIGNATURE = b"LPKSHHRH"
#: The incompatible flags this reader knows: XZ, LZ4, keyed hash, ZSTD, compact.
KNOWN_INCOMPATIBLE = 0b11111
COMPACT = 1 << 4
DATA, FIELD, ENTRY_ARRAY = 1, 2, 6
COMPRESSED = 0b111
#: Header fields (byte offsets in `struct Header`).
HEADER_SIZE, FIELD_TABLE, FIELD_TABLE_SIZE, N_ENTRIES, ENTRY_ARRAY_OFFSET = 88, 120, 128, 152, 176
N_OBJECTS = 144
MIN_HEADER = 208
#: Where an entry object keeps its realtime timestamp.
REALTIME = 24
_U64 = struct.Struct("<Q")
_OBJECT = struct.Struct("<B7xQ")  # type, flags and reserved, size

#: journalctl's unit name suffixes (`unit_name_mangle` appends `.service` to a name
#: without one).
UNIT_SUFFIXES = (
    ".service", ".socket", ".target", ".device", ".mount", ".automount",
    ".swap", ".timer", ".path", ".slice", ".scope",
)  # fmt: skip
#: Names journalctl takes as they are (a name starting with a dot or `@` it mangles in ways
#: not mirrored here: those are counted by journalctl).
_PLAIN_UNIT = re.compile(r"^[A-Za-z0-9_:\\-][A-Za-z0-9_.:\\-]*(@[A-Za-z0-9_.:\\-]*)?$")
COREDUMP = b"MESSAGE_ID=fc2e22bc6ee647b6b90729ab34a250b1"

#: Alternative values of one field (`PRIORITY=0` … `PRIORITY=3`): entries holding any.
Match = tuple[bytes, ...]
#: Entries holding all of these.
Clause = tuple[Match, ...]
#: Entries of any of these.
Group = tuple[Clause, ...]


class Unsupported(Exception):
    """This reader cannot count this query in these files: count with journalctl."""


def unit_group(unit: str) -> Group:
    """journalctl's `--unit`: the unit's own messages, its core dumps, PID 1's and
    privileged daemons' messages about it (and, for a slice, its members')."""
    if not _PLAIN_UNIT.match(unit) or unit.endswith("@"):
        raise Unsupported(f"unit name {unit!r} is not counted here")
    name = unit if unit.endswith(UNIT_SUFFIXES) else f"{unit}.service"
    value = name.encode()
    group: list[Clause] = [
        ((b"_SYSTEMD_UNIT=" + value,),),
        # (the rare match first: a clause is empty as soon as one match has no entry)
        ((b"COREDUMP_UNIT=" + value,), (COREDUMP,), (b"_UID=0",)),
        ((b"UNIT=" + value,), (b"_PID=1",)),
        ((b"OBJECT_SYSTEMD_UNIT=" + value,), (b"_UID=0",)),
    ]
    if name.endswith(".slice"):
        group.append(((b"_SYSTEMD_SLICE=" + value,),))
    return tuple(group)


def priority_group(level: int) -> Group:
    """journalctl's `--priority`: this level and the more severe ones."""
    return ((tuple(f"PRIORITY={p}".encode() for p in range(level + 1)),),)


def groups(unit: str | None, level: int | None) -> list[Group]:
    """What journalctl's `--unit` and `--priority` ask of an entry (`--priority=7`, every
    level, asks nothing: entries without a priority are listed too)."""
    found = [] if unit is None else [unit_group(unit)]
    if level is not None and level < 7:
        found.append(priority_group(level))
    return found


def count(
    paths: Iterable[Path],
    groups: Sequence[Group],
    since: int | None = None,
    until: int | None = None,
) -> int:
    """The entries of the files `paths` that belong to every group, with a realtime
    (microseconds) in [since, until] where given."""
    total = 0
    for path in paths:
        try:
            with (
                path.open("rb") as handle,
                mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as memory,
            ):
                total += _File(memory).count(groups, since, until)
        except (OSError, ValueError, struct.error, IndexError) as error:
            raise Unsupported(f"{path}: {error}") from None
    return total


#: What a match or clause stands for: the union of sorted arrays, or a set.
_Value: TypeAlias = "list[array[int]] | set[int]"


def _size(value: _Value) -> int:
    if isinstance(value, set):
        return len(value)
    if len(value) == 1:
        return len(value[0])
    return len(set(itertools.chain.from_iterable(value)))


def _empty(value: _Value) -> bool:
    return not value if isinstance(value, set) else not any(value)


def _items(value: _Value) -> Iterable[int]:
    return value if isinstance(value, set) else itertools.chain.from_iterable(value)


def _bound(value: _Value) -> int:
    """At least `_size(value)`, without building a set."""
    return len(value) if isinstance(value, set) else sum(map(len, value))


def _intersection(values: list[_Value]) -> _Value:
    if len(values) == 1:
        return values[0]
    smallest, *others = sorted(values, key=_bound)
    result = set(_items(smallest))
    for other in others:
        if not result:
            break
        result = result.intersection(_items(other))
    return result


def _union(values: list[_Value]) -> _Value:
    if len(values) == 1:
        return values[0]
    return set(itertools.chain.from_iterable(_items(v) for v in values))


class _File:
    """One journal file, mapped read-only."""

    def __init__(self, memory: mmap.mmap) -> None:
        self.memory = memory
        if memory[:8] != SIGNATURE:
            raise Unsupported("not a journal file")
        incompatible = struct.unpack_from("<I", memory, 12)[0]
        if incompatible & ~KNOWN_INCOMPATIBLE:
            raise Unsupported(f"journal file flags {incompatible:#x}")
        if self._u64(HEADER_SIZE) < MIN_HEADER:
            raise Unsupported("journal file header too old")
        self.item = "I" if incompatible & COMPACT else "Q"
        self.data_payload = 72 if incompatible & COMPACT else 64
        #: No chain is longer than the file has objects (a damaged file may loop).
        self.bound = min(self._u64(N_OBJECTS), len(memory) // 16) + 1
        self.fields = self._fields()
        self._data: dict[bytes, tuple[int, int]] = {}

    def _u64(self, offset: int) -> int:
        value: int = _U64.unpack_from(self.memory, offset)[0]
        return value

    def _object(self, offset: int, kind: int) -> tuple[int, int]:
        """The flags and size of the object at `offset`, which must be a `kind`."""
        if offset <= 0 or offset % 8 or offset + 16 > len(self.memory):
            raise Unsupported(f"object offset {offset} out of place")
        found, size = _OBJECT.unpack_from(self.memory, offset)
        if found != kind or size < 16 or offset + size > len(self.memory):
            raise Unsupported(f"object at {offset} is not a type {kind} object")
        return self.memory[offset + 1], size

    def _fields(self) -> dict[bytes, int]:
        """Each field name's FIELD object: the field hash table's chains, walked."""
        table, size = self._u64(FIELD_TABLE), self._u64(FIELD_TABLE_SIZE)
        if table + size > len(self.memory) or size % 16:
            raise Unsupported("field hash table out of place")
        fields: dict[bytes, int] = {}
        for bucket in range(table, table + size, 16):
            offset, steps = self._u64(bucket), 0
            while offset:
                _, length = self._object(offset, FIELD)
                fields[self.memory[offset + 40 : offset + length]] = offset
                offset, steps = self._u64(offset + 24), steps + 1
                if steps > self.bound:
                    raise Unsupported("field chain loops")
        return fields

    def _lookup(self, payload: bytes) -> tuple[int, int]:
        """The DATA object holding `payload` and its entry count ((0, 0): none)."""
        known = self._data.get(payload)
        if known is not None:
            return known
        field = payload.partition(b"=")[0]
        offset, steps = self.fields.get(field, 0), 0
        found = (0, 0)
        if offset:
            offset = self._u64(offset + 32)  # head_data_offset
        while offset and found == (0, 0):
            flags, length = self._object(offset, DATA)
            if flags & COMPRESSED:
                raise Unsupported(f"a compressed {field.decode(errors='replace')} value")
            if self.memory[offset + self.data_payload : offset + length] == payload:
                found = (offset, self._u64(offset + 56))
            offset, steps = self._u64(offset + 32), steps + 1  # next_field_offset
            if steps > self.bound:
                raise Unsupported("data chain loops")
        self._data[payload] = found
        return found

    def _chain(self, first: int, entries: int) -> array[int]:
        """`entries` entry offsets from the entry array chain starting at `first`."""
        items = array(self.item)
        width = items.itemsize
        if entries > len(self.memory) // 64:  # (an entry object takes 64 bytes at least)
            raise Unsupported(f"{entries} entries in a file of {len(self.memory)} bytes")
        offset, steps = first, 0
        while offset and len(items) < entries:
            _, size = self._object(offset, ENTRY_ARRAY)
            take = min((size - 24) // width, entries - len(items))
            items.frombytes(self.memory[offset + 24 : offset + 24 + take * width])
            offset, steps = self._u64(offset + 16), steps + 1
            if steps > self.bound:
                raise Unsupported("entry array chain loops")
        if sys.byteorder != "little":
            items.byteswap()
        if 0 in items:  # slots not written yet (a file being written)
            del items[items.index(0) :]
        return items

    def _entries(self, payload: bytes) -> array[int]:
        """The entries holding `payload`, in file order."""
        offset, entries = self._lookup(payload)
        if not offset or not entries:
            return array(self.item)
        first = self._u64(offset + 40)  # entry_offset: the first entry, inline
        return array(self.item, [first]) + self._chain(self._u64(offset + 48), entries - 1)

    def _realtime(self, entry: int) -> int:
        return self._u64(entry + REALTIME)

    def _window(self, items: array[int], since: int | None, until: int | None) -> array[int]:
        if since is None and until is None:
            return items
        low = bisect.bisect_left(items, since, key=self._realtime) if since is not None else 0
        high = (
            bisect.bisect_right(items, until, key=self._realtime)
            if until is not None
            else len(items)
        )
        return items[low:high]

    def count(self, groups: Sequence[Group], since: int | None, until: int | None) -> int:
        if not groups:
            if since is None and until is None:
                return self._u64(N_ENTRIES)
            every = self._chain(self._u64(ENTRY_ARRAY_OFFSET), self._u64(N_ENTRIES))
            return len(self._window(every, since, until))
        values: list[_Value] = []
        for group in groups:
            clauses = [self._clause(clause, since, until) for clause in group]
            found = [c for c in clauses if c is not None and not _empty(c)]
            if not found:
                return 0
            values.append(_union(found))
        return _size(_intersection(values))

    def _clause(self, clause: Clause, since: int | None, until: int | None) -> _Value | None:
        """The entries holding each match of `clause`; None as soon as one match has none,
        in the clause's order (counted from the DATA objects, before reading any array)."""
        bounds = []
        for match in clause:
            bounds.append(sum(self._lookup(p)[1] for p in match))
            if not bounds[-1]:
                return None
        values: list[_Value] = []
        for _, match in sorted(zip(bounds, clause, strict=True), key=lambda pair: pair[0]):
            arrays = [self._window(self._entries(p), since, until) for p in match]
            arrays = [a for a in arrays if a]
            if not arrays:
                return None
            values.append(arrays)
        return _intersection(values)
