"""One zip member unpacked against the source's limits, a step of at most CHUNK bytes at a time.

zipfile cannot do this: for a bzip2 or LZMA member it hands all the compressed bytes it reads at
once to a decompressor with no output limit, so 987 bytes of bzip2 became 1 GiB in one call. So
zipfile reads the central directory (names, sizes, offsets, flags) and this module reads the
member's bytes from its local header on. A member is refused before it is unpacked when its
declared size is over max_bytes or its declared ratio over max_ratio; while unpacking, it may not
pass the size it declared (so a lying header costs one step), nor the bytes left of max_bytes for
the whole archive.
"""

from __future__ import annotations

import bz2
import lzma
import struct
import zipfile
import zlib
from collections.abc import Iterator
from typing import Protocol

from merchant_code.feeds.base import FeedError
from merchant_code.feeds.limits import CHUNK, Limits, check_ratio, over_size

_LOCAL_HEADER = struct.Struct("<4s2B4HL2L2H")  # zipfile's structFileHeader: 30 bytes
_ENCRYPTED, _PATCHED, _STRONG = 0x01, 0x20, 0x40


class _Decompressor(Protocol):
    @property
    def eof(self) -> bool: ...
    @property
    def needs_input(self) -> bool: ...
    def decompress(self, data: bytes, max_length: int = -1) -> bytes: ...


def read(body: bytes, info: zipfile.ZipInfo, left: int, limits: Limits) -> bytes:
    """The member's bytes; `left` is what remains of max_bytes for the archive.
    Raises TooLarge over a limit, FeedError for a member that cannot be read."""
    name = info.filename
    if info.file_size > limits.max_bytes:
        raise over_size(f"{name} in the zip ({info.file_size:,} bytes unpacked, it declares)", limits)
    check_ratio(f"{name} in the zip declares that it", info.file_size, info.compress_size, limits)
    if info.flag_bits & (_ENCRYPTED | _PATCHED | _STRONG):
        raise FeedError(f"unreadable zip: {name} is encrypted or patched")
    pieces: list[bytes] = []
    size, crc = 0, 0
    for piece in _unpack(info, _packed(body, info)):
        size += len(piece)
        if size > info.file_size:
            raise FeedError(f"unreadable zip: {name} unpacks past the {info.file_size:,} bytes it declares")
        if size > left:
            raise over_size("the zip's members together", limits)
        crc = zlib.crc32(piece, crc)
        pieces.append(piece)
    if size != info.file_size or crc != info.CRC:
        raise FeedError(f"unreadable zip: {name} is damaged (its size or CRC-32 differs from its header)")
    return b"".join(pieces)


def _packed(body: bytes, info: zipfile.ZipInfo) -> memoryview:
    start = info.header_offset
    if start < 0 or start + _LOCAL_HEADER.size > len(body):
        raise FeedError(f"unreadable zip: truncated file header of {info.filename}")
    header = _LOCAL_HEADER.unpack_from(body, start)
    if header[0] != b"PK\x03\x04":
        raise FeedError(f"unreadable zip: bad magic number for the file header of {info.filename}")
    begin = start + _LOCAL_HEADER.size + header[10] + header[11]  # past the name and the extra field
    if begin + info.compress_size > len(body):
        raise FeedError(f"unreadable zip: {info.filename} runs past the end of the archive")
    return memoryview(body)[begin : begin + info.compress_size]


def _unpack(info: zipfile.ZipInfo, packed: memoryview) -> Iterator[bytes]:
    method = info.compress_type
    if method == zipfile.ZIP_STORED:
        for at in range(0, len(packed), CHUNK):
            yield bytes(packed[at : at + CHUNK])
    elif method == zipfile.ZIP_DEFLATED:
        yield from _inflate(packed)
    elif method in (zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA):
        try:
            if method == zipfile.ZIP_BZIP2:
                yield from _stepwise(bz2.BZ2Decompressor(), packed)
            else:
                yield from _stepwise(*_lzma(packed, info.file_size))
        except (OSError, EOFError, lzma.LZMAError) as exc:  # bz2 says OSError for damaged data
            raise FeedError(f"unreadable zip: {exc!r}") from None
    else:
        raise FeedError(f"unreadable zip: compression method {method} is not supported")


def _inflate(packed: memoryview) -> Iterator[bytes]:
    inflate = zlib.decompressobj(-zlib.MAX_WBITS)
    try:
        # compressed bytes go in CHUNK at a time: zlib copies what it has not used into
        # unconsumed_tail on every step, which over a whole member would be quadratic
        for at in range(0, len(packed), CHUNK):
            data = bytes(packed[at : at + CHUNK])
            while data and not inflate.eof:
                yield inflate.decompress(data, CHUNK)
                data = inflate.unconsumed_tail
        yield inflate.flush()
    except zlib.error as exc:
        raise FeedError(f"unreadable zip: {exc}") from None


def _stepwise(decompressor: _Decompressor, packed: memoryview) -> Iterator[bytes]:
    for at in range(0, len(packed), CHUNK):
        if decompressor.eof:
            return  # what follows the stream's end is not part of it
        yield decompressor.decompress(bytes(packed[at : at + CHUNK]), CHUNK)
        while not decompressor.eof and not decompressor.needs_input:
            yield decompressor.decompress(b"", CHUNK)


def _lzma(packed: memoryview, file_size: int) -> tuple[_Decompressor, memoryview]:
    """zip's LZMA: a 4-byte header (version, size of the properties), the LZMA1 properties (lc,
    lp and pb in one byte, the dictionary size), then the raw stream. The dictionary need not be
    larger than what the member may unpack to: a header asking for 4 GiB gets no more."""
    if len(packed) < 4:
        raise lzma.LZMAError("truncated LZMA header")
    (size,) = struct.unpack_from("<H", packed, 2)
    if size != 5 or len(packed) < 9:
        raise lzma.LZMAError("LZMA properties of an unknown size")
    byte = packed[4]
    dict_size = min(int.from_bytes(packed[5:9], "little"), max(file_size, 4096))
    options = {"id": lzma.FILTER_LZMA1, "lc": byte % 9, "lp": byte // 9 % 5, "pb": byte // 45}
    return lzma.LZMADecompressor(lzma.FORMAT_RAW, filters=[{**options, "dict_size": dict_size}]), packed[9:]
