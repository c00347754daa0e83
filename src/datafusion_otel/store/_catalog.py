"""Which files of a store hold its rows now: every complete file, minus what merges cover.

Object storage has no atomic swap, so compaction (`datafusion_otel.store._compact`) writes a
merged file, then its manifest (``<merged>.covers.json``: every file whose rows the merged
file holds, transitively), and only then deletes those sources. A reader lists the store
and decides with `live_files`:

* a merged file without its manifest is an incomplete merge: it is not read (its sources are);
* a complete merge's covered files are not read, whether or not they are still there;
* when two complete merges cover a file in common (two compactors raced, which the lease
  should prevent), the newest wins and the other is not read (nor are its covers skipped),
  so no row is read twice.

Every other ``*.parquet`` object under a table's prefix is read: writers never change a
file once it is visible, so whatever is listed is complete.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field

from datafusion_otel.store._fs import StoreFS, StoreObject
from datafusion_otel.store._layout import (
    MANIFEST_SUFFIX,
    PARQUET_SUFFIX,
    is_merged,
    manifest_key,
)

__all__ = ["Catalog", "StoreListing", "live_files", "parse_manifest"]

_LOG = logging.getLogger("datafusion_otel.store")


def parse_manifest(data: bytes | None) -> frozenset[str] | None:
    """Return the keys a manifest covers (None when it is missing or unreadable)."""
    if data is None:
        return None
    try:
        covers = json.loads(data)["covers"]
    except (ValueError, KeyError, TypeError):
        return None
    if not isinstance(covers, list) or not all(isinstance(k, str) for k in covers):
        return None
    return frozenset(covers)


@dataclass
class StoreListing:
    """One listing of a store, split by what readers do with each file.

    Attributes:
        live: The data files to read.
        covered: Data files a complete merge holds (not read; ``compact`` deletes them).
        incomplete: Merged files without a manifest (not read).
        superseded: Complete merged files that lost to a newer overlapping merge (not read).
        manifests: Manifest key -> keys it covers, for every manifest read.
        objects: Every object listed.
    """

    live: list[StoreObject] = field(default_factory=list)
    covered: list[StoreObject] = field(default_factory=list)
    incomplete: list[StoreObject] = field(default_factory=list)
    superseded: list[StoreObject] = field(default_factory=list)
    manifests: dict[str, frozenset[str]] = field(default_factory=dict)
    objects: list[StoreObject] = field(default_factory=list)


def live_files(
    objects: Iterable[StoreObject], manifests: dict[str, frozenset[str] | None]
) -> StoreListing:
    """Split listed ``objects`` into what readers read and what they skip.

    Args:
        objects: Every object listed under the store (or a table's prefix).
        manifests: Manifest key -> keys it covers (None if unreadable), for every manifest
            among ``objects``.
    """
    listing = StoreListing(objects=list(objects))
    data = [o for o in listing.objects if o.key.endswith(PARQUET_SUFFIX)]
    merged = sorted((o for o in data if is_merged(o.key)), key=lambda o: o.key, reverse=True)
    skip: set[str] = set()
    not_read: set[str] = set()
    for obj in merged:  # newest first: a newer merge may cover an older merged file
        covers = manifests.get(manifest_key(obj.key))
        if covers is None:
            listing.incomplete.append(obj)
            not_read.add(obj.key)
        elif obj.key in skip:
            continue  # covered by a newer merge: its covers are in that merge's manifest
        elif covers & skip:
            listing.superseded.append(obj)
            not_read.add(obj.key)
        else:
            listing.manifests[manifest_key(obj.key)] = covers
            skip |= covers
    for obj in data:
        if obj.key in skip:
            listing.covered.append(obj)
        elif obj.key not in not_read:
            listing.live.append(obj)
    return listing


_RELISTS = 5
"""How many times `Catalog.listing` lists again when a listed manifest is gone meanwhile."""


class Catalog:
    """Lists a store and reads manifests, caching them (a manifest never changes).

    A manifest listed but gone when read was deleted meanwhile, after its merged file (a
    newer compaction merged that file away, or a prune): the listing is then stale (it may
    still name that merged file, which would pass for unfinished while its sources are long
    gone), so the store is listed again, a few times at most.

    Args:
        fs: The store.
    """

    def __init__(self, fs: StoreFS) -> None:
        self.fs = fs
        self._manifests: dict[str, frozenset[str] | None] = {}

    def listing(self, prefix: str = "") -> StoreListing:
        """List ``prefix`` (default: the whole store) and split it with `live_files`."""
        for _ in range(_RELISTS):
            objects = self.fs.list(prefix)
            found, gone = self._read_manifests(objects)
            if not gone:
                break
            _LOG.debug("compaction manifests deleted while listing: %s; listing again", gone)
        for key in gone:  # still going after every try: an unfinished merge, as listed
            _LOG.warning("compaction manifest %s vanished while read", self.fs.display(key))
        return live_files(objects, found)

    def _read_manifests(
        self, objects: list[StoreObject]
    ) -> tuple[dict[str, frozenset[str] | None], list[str]]:
        """Return manifest key -> covers for the manifests listed, and those gone since."""
        found: dict[str, frozenset[str] | None] = {}
        gone: list[str] = []
        for obj in objects:
            if not obj.key.endswith(MANIFEST_SUFFIX):
                continue
            if self._manifests.get(obj.key) is None:
                data = self.fs.get(obj.key)
                if data is None:
                    gone.append(obj.key)
                    found[obj.key] = None
                    continue
                covers = parse_manifest(data)
                if covers is None:
                    _LOG.warning("unreadable compaction manifest %s", self.fs.display(obj.key))
                self._manifests[obj.key] = covers
            found[obj.key] = self._manifests[obj.key]
        return found, gone
