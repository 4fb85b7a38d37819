"""A gzip file written by several threads: one standard gzip stream, compressed block-wise.

Large outputs (a 33-class probability map of a whole head is 2.2 GB before compression)
spend most of their write time in zlib, which one thread runs at a fraction of the
machine. This writer cuts the data into blocks and deflates them on a thread pool (zlib
releases the GIL), the way pigz does: each block is raw deflate ended by a sync flush, the
last one by the final block, so the concatenation is *one* deflate stream inside *one* gzip
member (header with mtime 0 and no name, CRC-32 and size trailer). Every gzip reader
(zlib, Python's gzip, nibabel, ITK) reads it as any other. The output depends only on the
data, the block size and the level, never on the thread count or timing, so hashes stay
reproducible. Blocks do not share a dictionary: the file is a little larger than a
single-threaded stream's (well under 1% at 4 MiB blocks).
"""

from __future__ import annotations

import io
import os
import struct
import zlib
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

__all__ = ["BLOCK_BYTES", "ParallelGzipWriter", "compression_threads"]

BLOCK_BYTES = 4 << 20
# Blocks compressed or waiting beyond the threads: bounds the memory held to
# (threads + this) blocks while the next one is read.
_QUEUE_SLACK = 2
# The gzip header: magic, deflate, no flags, mtime 0, no extra flags, OS "unknown".
_HEADER = b"\x1f\x8b\x08\x00" + struct.pack("<I", 0) + b"\x00\xff"


def compression_threads() -> int:
    """Threads for compression: the CPUs this process may use (at least 1)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def _deflate(block: bytes, level: int, last: bool) -> bytes:
    compressor = zlib.compressobj(level, zlib.DEFLATED, -zlib.MAX_WBITS)
    return compressor.compress(block) + compressor.flush(zlib.Z_FINISH if last else zlib.Z_SYNC_FLUSH)


class ParallelGzipWriter(io.RawIOBase):
    """A write-only binary file whose bytes reach ``path`` as one gzip stream.

    Args:
        path: the file to create (truncated if it exists).
        level: zlib compression level 0-9.
        threads: compressing threads (default :func:`compression_threads`); 1 compresses
            on the calling thread, with the same bytes as a result.
        block_bytes: uncompressed bytes per block.
    """

    def __init__(self, path: str | Path, level: int = 4, threads: int | None = None, block_bytes: int = BLOCK_BYTES) -> None:
        if not 0 <= level <= 9:
            raise ValueError(f"gzip level {level} must lie in 0..9")
        if block_bytes < 1:
            raise ValueError(f"block_bytes {block_bytes} must be positive")
        super().__init__()
        self._level, self._block_bytes = level, block_bytes
        self._threads = compression_threads() if threads is None else max(1, threads)
        self._pool = ThreadPoolExecutor(self._threads, "gzip") if self._threads > 1 else None
        self._pending: deque[Future | bytes] = deque()
        self._buffer = bytearray()
        self._crc, self._size = 0, 0
        self._file = open(path, "wb")
        self._file.write(_HEADER)

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        view = memoryview(data).cast("B")
        self._crc = zlib.crc32(view, self._crc)
        self._size += view.nbytes
        self._buffer += view
        while len(self._buffer) > self._block_bytes:  # ">": the final block is kept for close()
            block = bytes(self._buffer[: self._block_bytes])
            del self._buffer[: self._block_bytes]
            self._submit(block, last=False)
        return view.nbytes

    def _submit(self, block: bytes, last: bool) -> None:
        if self._pool is None:
            self._file.write(_deflate(block, self._level, last))
            return
        self._pending.append(self._pool.submit(_deflate, block, self._level, last))
        while len(self._pending) > self._threads + _QUEUE_SLACK:
            self._file.write(self._pending.popleft().result())

    def close(self) -> None:
        if self.closed:
            return
        try:
            if self._file is not None and not self._file.closed:
                self._submit(bytes(self._buffer), last=True)
                self._buffer = bytearray()
                while self._pending:
                    self._file.write(self._pending.popleft().result())
                self._file.write(struct.pack("<II", self._crc & 0xFFFFFFFF, self._size & 0xFFFFFFFF))
        finally:
            if self._pool is not None:
                self._pool.shutdown(cancel_futures=True)
            self._file.close()
            super().close()
