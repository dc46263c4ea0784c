"""Megatron-LM's memory-mapped indexed dataset (`prefix.bin` + `prefix.idx`), byte for byte.

Files written here are read by Megatron-LM and LiBai, and theirs are read here.

`prefix.idx` (all little-endian)::

    9 bytes   magic b"MMIDIDX\\x00\\x00"
    uint64    version, 1
    uint8     dtype code of the tokens (see DTYPE_CODES)
    uint64    number of sequences S
    uint64    length D of the document index (number of documents + 1)
    int32[S]  sizes: tokens per sequence
    int64[S]  pointers: byte offset of each sequence in the .bin
    int64[D]  document index: 0, then the sequence count after each document

`prefix.bin` is the tokens of all sequences, concatenated, in the dtype of the index.
A sequence is a document, or a sentence when the data was split into sentences; document
`d` covers sequences `doc_idx[d]:doc_idx[d + 1]`.
"""
from __future__ import annotations

import os
import shutil
import struct
from typing import Any, Optional, Union

import numpy as np

from libai.data.errors import DataError

__all__ = [
    "MMapIndexedDataset",
    "MMapIndexedDatasetBuilder",
    "best_fitting_dtype",
    "data_file_path",
    "get_indexed_dataset",
    "index_file_path",
    "make_builder",
    "DTYPE_CODES",
]

_MAGIC = b"MMIDIDX\x00\x00"
_VERSION = 1
# Megatron's codes. 6 and 7 are the float types; megatron-core reads 6 as float64, 7 as float32.
DTYPE_CODES: dict[int, type] = {
    1: np.uint8,
    2: np.int8,
    3: np.int16,
    4: np.int32,
    5: np.int64,
    6: np.float64,
    7: np.float32,
    8: np.uint16,
}
_CODE_OF_DTYPE = {np.dtype(dtype): code for code, dtype in DTYPE_CODES.items()}
# magic + version + dtype code + two counts
_HEADER_SIZE = len(_MAGIC) + 8 + 1 + 8 + 8
_FIX = "re-create it with tools/preprocess_data.py"


def index_file_path(prefix: str) -> str:
    """`prefix.idx`."""
    return f"{prefix}.idx"


def data_file_path(prefix: str) -> str:
    """`prefix.bin`."""
    return f"{prefix}.bin"


def best_fitting_dtype(vocab_size: Optional[int] = None) -> type:
    """The token dtype Megatron picks: uint16 for a vocabulary under 65,500 tokens, else int32."""
    if vocab_size is not None and vocab_size < 65500:
        return np.uint16
    return np.int32


def _dtype_code(dtype: Any) -> int:
    dtype = np.dtype(dtype)
    if dtype not in _CODE_OF_DTYPE:
        stored = sorted(str(np.dtype(d)) for d in DTYPE_CODES.values())
        raise ValueError(f"indexed datasets store {stored}, not {dtype}")
    return _CODE_OF_DTYPE[dtype]


# --------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------


def _read_header(path: str, file_size: int) -> tuple[np.dtype, int, int]:
    """Check magic and version of an index; return (dtype, number of sequences, doc_idx length)."""
    with open(path, "rb") as f:
        header = f.read(_HEADER_SIZE)
    # A short file that starts like the magic is truncated; anything else is not an index.
    if header[: len(_MAGIC)] != _MAGIC[: len(header)]:
        raise DataError(f"{path} is not a Megatron mmap index (bad magic bytes): {_FIX}")
    if len(header) < _HEADER_SIZE:
        raise DataError(f"{path} is truncated ({file_size} bytes, shorter than the header): {_FIX}")
    version, code, num_seqs, doc_count = struct.unpack("<QBQQ", header[len(_MAGIC):])
    if version != _VERSION:
        raise DataError(f"{path} has index version {version}, only version {_VERSION} is supported: {_FIX}")
    if code not in DTYPE_CODES:
        raise DataError(f"{path} has unknown dtype code {code}: {_FIX}")
    return np.dtype(DTYPE_CODES[code]), num_seqs, doc_count


class _Index:
    """The parsed `.idx`: dtype, sizes, pointers and document index (numpy views of a memmap)."""

    def __init__(self, path: str) -> None:
        file_size = os.path.getsize(path)
        self.dtype, num_seqs, doc_count = _read_header(path, file_size)
        expected = _HEADER_SIZE + num_seqs * (4 + 8) + doc_count * 8
        if file_size < expected:
            raise DataError(
                f"{path} is truncated ({file_size} bytes, its header promises {expected}): {_FIX}"
            )
        # A zero-length memmap is an error in numpy; an empty index has no arrays to map.
        buffer = np.memmap(path, mode="r", order="C") if file_size > 0 else np.empty(0, np.uint8)
        offset = _HEADER_SIZE
        self.sizes = np.frombuffer(buffer, dtype="<i4", count=num_seqs, offset=offset)
        offset += self.sizes.nbytes
        self.pointers = np.frombuffer(buffer, dtype="<i8", count=num_seqs, offset=offset)
        offset += self.pointers.nbytes
        self.doc_idx = np.frombuffer(buffer, dtype="<i8", count=doc_count, offset=offset)
        self._buffer = buffer
        if doc_count and (self.doc_idx[0] != 0 or self.doc_idx[-1] > num_seqs):
            raise DataError(f"{path} has a corrupt document index: {_FIX}")

    def __len__(self) -> int:
        return len(self.sizes)


class MMapIndexedDataset:
    """Read-only view of `prefix.bin`/`prefix.idx`: `ds[i]` is sequence i as a numpy array.

    Slices (step 1) give a list of arrays; `get(i, offset, length)` reads part of a sequence.
    The tokens stay on disk (numpy memmap); only what is read is loaded.
    """

    def __init__(self, path: str, skip_warmup: bool = False) -> None:
        self._prefix = os.fspath(path)
        self._open(skip_warmup)

    def _open(self, skip_warmup: bool) -> None:
        prefix = self._prefix
        for file in (index_file_path(prefix), data_file_path(prefix)):
            if not os.path.isfile(file):
                raise FileNotFoundError(
                    f"indexed dataset '{prefix}': {file} not found: check data_prefix, or create it "
                    f"with tools/preprocess_data.py --output-prefix ..."
                )
        self._index = _Index(index_file_path(prefix))
        bin_path = data_file_path(prefix)
        bin_size = os.path.getsize(bin_path)
        itemsize = self._index.dtype.itemsize
        needed = int(self._index.pointers[-1] + self._index.sizes[-1] * itemsize) if len(self._index) else 0
        if bin_size < needed:
            raise DataError(f"{bin_path} is truncated ({bin_size} bytes, its index needs {needed}): {_FIX}")
        self._bin = np.memmap(bin_path, mode="r", order="C") if bin_size > 0 else np.empty(0, np.uint8)
        if not skip_warmup:
            _warmup(bin_path)

    # Memmaps do not pickle as maps (numpy would copy the whole file): reopen by path instead,
    # which is what DataLoader workers started with "spawn" need.
    def __getstate__(self) -> dict:
        return {"_prefix": self._prefix}

    def __setstate__(self, state: dict) -> None:
        self._prefix = state["_prefix"]
        self._open(skip_warmup=True)

    def __len__(self) -> int:
        return len(self._index)

    def __getitem__(self, idx: Union[int, slice]) -> Union[np.ndarray, list[np.ndarray]]:
        if isinstance(idx, (int, np.integer)):
            return self.get(int(idx))
        if isinstance(idx, slice):
            start, stop, step = idx.indices(len(self))
            if step != 1:
                raise ValueError("MMapIndexedDataset slices must be contiguous (step 1)")
            return [self.get(i) for i in range(start, stop)]
        raise TypeError(f"MMapIndexedDataset indices must be int or slice, not {type(idx).__name__}")

    def get(self, idx: int, offset: int = 0, length: Optional[int] = None) -> np.ndarray:
        """Tokens `offset : offset + length` of sequence `idx` (to its end when `length` is None)."""
        n = len(self)
        if not -n <= idx < n:
            raise IndexError(f"sequence {idx} out of range for an indexed dataset of {n} sequences")
        idx %= n
        size = int(self._index.sizes[idx])
        if length is None:
            length = size - offset
        if offset < 0 or length < 0 or offset + length > size:
            raise IndexError(f"tokens [{offset}, {offset + length}) out of range for sequence {idx} of {size} tokens")
        dtype = self._index.dtype
        start = int(self._index.pointers[idx]) + offset * dtype.itemsize
        return np.frombuffer(self._bin, dtype=dtype, count=length, offset=start)

    @property
    def sizes(self) -> np.ndarray:
        """Tokens per sequence (int32)."""
        return self._index.sizes

    @property
    def doc_idx(self) -> np.ndarray:
        """Document boundaries in sequences: document d is sequences `doc_idx[d]:doc_idx[d+1]`."""
        return self._index.doc_idx

    @property
    def dtype(self) -> np.dtype:
        """Token dtype."""
        return self._index.dtype

    @property
    def prefix(self) -> str:
        """The path prefix the dataset was opened with."""
        return self._prefix

    @property
    def supports_prefetch(self) -> bool:
        """Megatron's flag: memory-mapped data needs no prefetch."""
        return False

    @staticmethod
    def exists(path: str) -> bool:
        """Whether both `path.idx` and `path.bin` exist."""
        return os.path.isfile(index_file_path(path)) and os.path.isfile(data_file_path(path))


def _warmup(path: str, chunk: int = 1 << 24) -> None:
    # Reading once pulls the file into the page cache, so first-epoch reads are not disk-bound.
    with open(path, "rb") as f:
        while f.read(chunk):
            pass


def get_indexed_dataset(data_prefix: str, data_impl: str = "mmap", skip_warmup: bool = False) -> MMapIndexedDataset:
    """Open the indexed dataset at `data_prefix` (LiBai's name). Only `data_impl="mmap"` exists here."""
    if data_impl not in ("mmap", "infer"):
        raise DataError(
            f"data_impl={data_impl!r} is not supported: use 'mmap' (what tools/preprocess_data.py writes)"
        )
    if data_prefix is None:
        raise DataError("get_indexed_dataset needs data_prefix: the path of the .bin/.idx pair without extension")
    return MMapIndexedDataset(data_prefix, skip_warmup=skip_warmup)


# --------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------


def _write_index(path: str, dtype: np.dtype, sizes: np.ndarray, doc_idx: np.ndarray) -> None:
    """Write a version-1 `.idx`; sizes int32, byte pointers int64, doc_idx int64, little-endian."""
    sizes = np.asarray(sizes, dtype="<i4")
    pointers = np.zeros(len(sizes), dtype="<i8")
    if len(sizes) > 1:
        np.cumsum(sizes[:-1].astype(np.int64) * np.dtype(dtype).itemsize, out=pointers[1:])
    doc_idx = np.asarray(doc_idx, dtype="<i8")
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(_MAGIC)
        f.write(struct.pack("<Q", _VERSION))
        f.write(struct.pack("<B", _dtype_code(dtype)))
        f.write(struct.pack("<Q", len(sizes)))
        f.write(struct.pack("<Q", len(doc_idx)))
        f.write(sizes.tobytes(order="C"))
        f.write(pointers.tobytes(order="C"))
        f.write(doc_idx.tobytes(order="C"))
    # A reader never sees a half-written index.
    os.replace(tmp, path)


class MMapIndexedDatasetBuilder:
    """Write `prefix.bin` while adding sequences, then `prefix.idx` on `finalize`.

        builder = MMapIndexedDatasetBuilder("out.bin", dtype=np.uint16)
        for doc in docs:
            for sentence in doc:
                builder.add_item(sentence)      # tensor, array or list of token ids
            builder.end_document()
        builder.finalize("out.idx")
    """

    def __init__(self, out_file: str, dtype: Any = np.int64) -> None:
        self._dtype = np.dtype(dtype)
        _dtype_code(self._dtype)  # refuse unsupported dtypes before writing anything
        self._path = os.fspath(out_file)
        self._file = open(self._path, "wb")
        self._sizes: list[int] = []
        self._doc_idx: list[int] = [0]

    @property
    def dtype(self) -> np.dtype:
        """Token dtype of the files being written."""
        return self._dtype

    def add_item(self, tensor: Any) -> None:
        """Append one sequence (a torch tensor, numpy array or list of token ids)."""
        if hasattr(tensor, "detach"):
            tensor = tensor.detach().cpu().numpy()
        array = np.asarray(tensor)
        if array.size and np.issubdtype(array.dtype, np.integer) and np.issubdtype(self._dtype, np.integer):
            info = np.iinfo(self._dtype)
            if array.min() < info.min or array.max() > info.max:
                raise ValueError(f"token ids {array.min()}..{array.max()} do not fit the builder's dtype {self._dtype}")
        self._file.write(np.ascontiguousarray(array.reshape(-1), dtype=self._dtype.newbyteorder("<")).tobytes())
        self._sizes.append(int(array.size))

    def end_document(self) -> None:
        """Close the current document: the sequences added since the last call form one document."""
        self._doc_idx.append(len(self._sizes))

    def merge_file_(self, another_file: str) -> None:
        """Append the sequences and documents of the indexed dataset at prefix `another_file`."""
        other = MMapIndexedDataset(another_file, skip_warmup=True)
        if other.dtype != self._dtype:
            raise ValueError(f"cannot merge {another_file} ({other.dtype}) into a {self._dtype} builder")
        offset = len(self._sizes)
        self._sizes.extend(int(s) for s in other.sizes)
        # Drop the other index's leading 0: it equals our current end.
        self._doc_idx.extend(int(d) + offset for d in other.doc_idx[1:])
        self._file.flush()
        with open(data_file_path(another_file), "rb") as f:
            shutil.copyfileobj(f, self._file)

    def finalize(self, index_file: str) -> None:
        """Close the `.bin` and write the `.idx`."""
        self._file.close()
        _write_index(os.fspath(index_file), self._dtype, np.asarray(self._sizes), np.asarray(self._doc_idx))


def make_builder(out_file: str, impl: str = "mmap", vocab_size: Optional[int] = None) -> MMapIndexedDatasetBuilder:
    """Megatron's factory: an mmap builder with `best_fitting_dtype(vocab_size)`."""
    if impl != "mmap":
        raise ValueError(f"impl={impl!r} is not supported: use 'mmap'")
    return MMapIndexedDatasetBuilder(out_file, dtype=best_fitting_dtype(vocab_size))
