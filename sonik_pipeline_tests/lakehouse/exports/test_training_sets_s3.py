"""A training set written to and made again on object storage, with the catalog's s3.* settings alone."""

import datetime as dt

from pyarrow import fs as pafs

from sonik_pipeline.lakehouse.exports.training_sets import MANIFEST, export_dataset, reexport
from sonik_pipeline.lakehouse.ingest.run import ingest_day
from sonik_pipeline.lakehouse.sources.events import ArrowRows
from sonik_pipeline.lakehouse.sources.synthetic import synthetic_batch
from sonik_pipeline.lakehouse.tables.catalog import open_catalog
from sonik_pipeline.settings import CATALOG_NAME, Settings
from sonik_pipeline_tests import test_object_storage as object_storage

# The S3-compatible server and the production settings on it, as fixtures of this module too.
s3_endpoint, bucket = object_storage.s3_endpoint, object_storage.bucket
production_catalog_uri, s3_settings = object_storage.production_catalog_uri, object_storage.s3_settings

DAY = dt.date(2026, 4, 20)


def _objects(s3: pafs.S3FileSystem, location: str) -> dict[str, bytes]:
    root = location.removeprefix("s3://")
    infos = s3.get_file_info(pafs.FileSelector(root, recursive=True, allow_not_found=True))
    files = sorted(i.path for i in infos if i.type == pafs.FileType.File)
    result = {}
    for path in files:
        with s3.open_input_stream(path) as stream:
            result[path.removeprefix(root)] = stream.read()
    return result


def test_a_training_set_on_s3_is_made_again_byte_for_byte(s3_settings: Settings, bucket: pafs.S3FileSystem) -> None:
    catalog = open_catalog(CATALOG_NAME, s3_settings.catalog_uri, s3_settings.warehouse)
    ingest_day(catalog, DAY, [ArrowRows(synthetic_batch(DAY, 500), "test")])
    prefix = s3_settings.warehouse.removesuffix("/warehouse")

    manifest = export_dataset(catalog, "music.plays", DAY, DAY, f"{prefix}/sets/one", columns=["user_id", "track_id"])
    again = reexport(catalog, f"{prefix}/sets/one/{MANIFEST}", f"{prefix}/sets/two")

    one, two = _objects(bucket, f"{prefix}/sets/one"), _objects(bucket, f"{prefix}/sets/two")
    assert sorted(one) == ["/data/part-00000.parquet", f"/{MANIFEST}"]
    assert one == two and manifest.rows == 500
    assert again.out == f"{prefix}/sets/two" and object_storage.BUCKET in again.out
