"""The run's content cache: values computed from image content (backbone features, CLIP encodings, RegAD's
test embeddings), kept across cells and methods, bounded by bytes and evicted least recently used first.

One instance per run, owned by the run's `FeatureCache` and reached by methods as `context.features.store`;
nothing is cached at module level, so nothing outlives the run (or leaks from one test into the next).
Keys are tuples that start with what computed the value (e.g. `("features", "lite0", 2, digest)`).
"""
from __future__ import annotations

import hashlib
from collections import OrderedDict
from typing import Callable, Hashable, Sequence

import torch

Value = torch.Tensor | tuple[torch.Tensor, ...]


def image_digest(image: torch.Tensor) -> bytes:
    """A 16-byte digest of one image's pixels (float32, on the CPU): the content part of every cache key."""
    pixels = image.detach().to("cpu", torch.float32).contiguous().numpy()
    return hashlib.blake2b(pixels.tobytes(), digest_size=16).digest()


class DigestMemo:
    """`image_digest` of image rows, remembered by where their pixels live: rows of the same storage at the same
    offset, shape, strides and version are hashed once (the test images recur in every cell and method; on a GPU
    each hash would copy the pixels to the host). The memo holds the storages it remembers, so no other pixels
    can take their place in memory while remembered; a write through torch bumps the tensor's version and forgets
    it (a write that torch does not count, through `.data` or shared NumPy memory, would not: the harness never
    writes its images that way). Keeps the `max_storages` most recently used storages."""

    def __init__(self, max_storages: int = 8) -> None:
        self.max_storages = max_storages
        self.hashed = 0  # rows actually hashed
        # storage address, device -> (storage, version, {(offset, shape, strides, dtype): digest})
        self._storages: OrderedDict[tuple[int, str], tuple[object, int, dict[tuple, bytes]]] = OrderedDict()

    def _hash(self, images: torch.Tensor) -> list[bytes]:
        self.hashed += len(images)
        return [image_digest(image) for image in images]

    def digests(self, images: torch.Tensor) -> list[bytes]:
        """The digest of each image of `images` [b,...], as `image_digest` gives it."""
        try:
            version = images._version
        except RuntimeError:  # an inference-mode tensor has no version counter: nothing to remember it by
            return self._hash(images)
        storage = images.untyped_storage()
        where = (storage.data_ptr(), str(images.device))
        held = self._storages.get(where)
        if held is None or held[1] != version:
            held = (storage, version, {})
            self._storages[where] = held
        self._storages.move_to_end(where)
        while len(self._storages) > self.max_storages:
            self._storages.popitem(last=False)
        rows = held[2]
        keys = [(images.storage_offset() + i * images.stride(0), tuple(images.shape[1:]), images.stride()[1:],
                 images.dtype) for i in range(len(images))]
        missing = [i for i, key in enumerate(keys) if key not in rows]
        if missing:
            for i, digest in zip(missing, self._hash(images[missing])):
                rows[keys[i]] = digest
        return [rows[key] for key in keys]


def value_bytes(value: Value) -> int:
    """Bytes held by a tensor or a tuple of tensors."""
    tensors = value if isinstance(value, tuple) else (value,)
    return sum(t.numel() * t.element_size() for t in tensors)


class ContentCache:
    """A mapping from keys to tensors (or tuples of tensors) holding at most `max_bytes`; least recently
    used entries are evicted first. A value larger than the whole bound is returned but not kept."""

    def __init__(self, max_bytes: int) -> None:
        if max_bytes < 0:
            raise ValueError(f"cache bound max_bytes={max_bytes} must be >= 0")
        self.max_bytes = max_bytes
        self.bytes = 0
        self.peak_bytes = 0  # the most held at once
        self.evictions = 0  # entries dropped to stay within the bound (a value larger than the bound counts too)
        self.keeping = True  # False (inside `FeatureCache.lookup_only`): `get_many` computes misses, keeps nothing
        self._entries: OrderedDict[Hashable, Value] = OrderedDict()
        self._digests = DigestMemo()

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._entries

    def clear(self) -> None:
        """Drop every entry (the counters stay)."""
        self._entries.clear()
        self.bytes = 0

    def digests(self, images: torch.Tensor) -> list[bytes]:
        """The `image_digest` of each image of `images` [b,...] (the content part of keys), each image of a
        tensor the run keeps hashed once (`DigestMemo`)."""
        return self._digests.digests(images)

    def get(self, key: Hashable) -> Value | None:
        """The value of `key` (now the most recently used), or None."""
        value = self._entries.get(key)
        if value is not None:
            self._entries.move_to_end(key)
        return value

    def put(self, key: Hashable, value: Value) -> None:
        """Keep `value` under `key`, then evict least recently used entries until within the bound."""
        if key in self._entries:
            self.bytes -= value_bytes(self._entries.pop(key))
        size = value_bytes(value)
        if size > self.max_bytes:
            self.evictions += 1
            return
        self._entries[key] = value
        self.bytes += size
        while self.bytes > self.max_bytes:
            _, evicted = self._entries.popitem(last=False)
            self.bytes -= value_bytes(evicted)
            self.evictions += 1
        self.peak_bytes = max(self.peak_bytes, self.bytes)

    def get_many(self, keys: Sequence[Hashable], compute: Callable[[list[int]], list[Value]]) -> list[Value]:
        """The values of `keys`; `compute(indices)` makes the missing ones (in that order), which are kept
        (unless `keeping` is off). Values evicted while storing this batch are still returned."""
        found = {i: value for i, key in enumerate(keys) if (value := self.get(key)) is not None}
        missing = [i for i in range(len(keys)) if i not in found]
        if missing:
            for i, value in zip(missing, compute(missing)):
                found[i] = value
                if self.keeping:
                    self.put(keys[i], value)
        return [found[i] for i in range(len(keys))]
