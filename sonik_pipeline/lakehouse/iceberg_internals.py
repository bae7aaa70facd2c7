"""Every use of PyIceberg's private API, in one place, each with why and what would replace it.

PyIceberg 0.12 lacks three things this project needs; each is built on a private hook here, and
``sonik_pipeline_tests/lakehouse/test_iceberg_internals.py`` pins every symbol and hook, so an upgrade
that renames or stops calling one fails that test by name instead of changing behaviour silently.

- ``ReplaceManifests`` (a ``_SnapshotProducer``): rewriting manifests without changing data, what Java's
  ``RewriteManifests`` / Spark's ``rewrite_manifests`` do. Replaced by ``table.maintenance.rewrite_manifests()``
  once apache/iceberg-python PR #3631 lands.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from pyiceberg.manifest import ManifestContent, ManifestFile, ManifestWriter
from pyiceberg.table.snapshots import Operation, Summary
from pyiceberg.table.update.snapshot import _SnapshotProducer
from pyiceberg.typedef import EMPTY_DICT

if TYPE_CHECKING:
    from pyiceberg.io import FileIO
    from pyiceberg.partitioning import PartitionSpec
    from pyiceberg.table import Transaction

# Given the head's data manifests and a factory of manifest writers for a spec, return the data manifests
# that replace them (written through the factory, so PyIceberg tracks and cleans them up on failure).
RebuildDataManifests = Callable[[list[ManifestFile], Callable[["PartitionSpec"], ManifestWriter]], list[ManifestFile]]

# Snapshot-summary totals that a rewrite carries over unchanged from its parent.
_TOTALS = (
    "total-data-files",
    "total-delete-files",
    "total-records",
    "total-files-size",
    "total-position-deletes",
    "total-equality-deletes",
)


class ReplaceManifests(_SnapshotProducer["ReplaceManifests"]):
    """A ``replace`` snapshot whose data manifests are rebuilt from the branch head; data is unchanged.

    Hooks used: ``_existing_manifests`` (the manifests of the new snapshot), ``_deleted_entries`` (none),
    ``_summary`` (PyIceberg 0.12's ``update_snapshot_summaries`` rejects ``replace``), and
    ``_validate_concurrency``. On a commit conflict PyIceberg refreshes the table and calls
    ``_existing_manifests`` again, so the rebuild always starts from the latest head and a concurrent
    append is carried into the new manifests rather than lost; there is nothing left to validate.
    """

    def __init__(
        self,
        transaction: Transaction,
        io: FileIO,
        rebuild: RebuildDataManifests,
        snapshot_properties: dict[str, str] = EMPTY_DICT,
    ) -> None:
        super().__init__(Operation.REPLACE, transaction, io, snapshot_properties=snapshot_properties)
        self._rebuild = rebuild
        self.attempts = 0

    def _existing_manifests(self) -> list[ManifestFile]:
        self.attempts += 1
        head = self._transaction.table_metadata.snapshot_by_name(self._target_branch)
        if head is None:
            return []
        manifests = head.manifests(self._io)
        data = [m for m in manifests if m.content == ManifestContent.DATA]
        deletes = [m for m in manifests if m.content != ManifestContent.DATA]
        return [*self._rebuild(data, self.new_manifest_writer), *deletes]

    def _deleted_entries(self) -> list:
        return []

    def _validate_concurrency(self) -> None:
        """Nothing to validate: each attempt rebuilds from the refreshed head (see the class docstring)."""

    def _summary(self, snapshot_properties: dict[str, str] = EMPTY_DICT) -> Summary:
        metadata = self._transaction.table_metadata
        parent = metadata.snapshot_by_id(self._parent_snapshot_id) if self._parent_snapshot_id is not None else None
        previous = parent.summary if parent is not None and parent.summary is not None else {}
        totals = {key: previous[key] for key in _TOTALS if previous.get(key) is not None}
        return Summary(operation=Operation.REPLACE, **totals, **snapshot_properties)

    def written_manifests(self) -> list[str]:
        """Manifest files this producer wrote (all attempts), for a caller that aborts before committing."""
        return [*self._written_manifests, *self._uncommitted_manifests]
