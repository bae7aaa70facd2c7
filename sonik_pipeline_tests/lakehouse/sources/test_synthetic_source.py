import datetime as dt
import re

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from sonik_pipeline.lakehouse.sources.events import BATCH_ROWS, ArrowRows
from sonik_pipeline.lakehouse.sources.synthetic import TUTORIAL_ARTISTS, catalogue, synthetic_batch, synthetic_events

DAY = dt.date(2026, 4, 20)
UUID4 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


@pytest.fixture(scope="module")
def day_events() -> pa.Table:
    return synthetic_batch(DAY, 20_000)


def test_the_same_day_always_yields_the_same_events() -> None:
    assert synthetic_batch(DAY, 5_000).equals(synthetic_batch(DAY, 5_000))
    assert not synthetic_batch(DAY, 5_000).equals(synthetic_batch(DAY + dt.timedelta(days=1), 5_000))


def test_events_per_day_is_exact_and_batched() -> None:
    n = BATCH_ROWS + 10
    batches = list(synthetic_events(DAY, n))

    assert [b.rows.num_rows for b in batches] == [BATCH_ROWS, 10]
    assert all(isinstance(b, ArrowRows) for b in batches)


def test_play_ids_are_unique_uuid4_strings(day_events: pa.Table) -> None:
    ids = day_events.column("play_id").to_pylist()

    assert len(set(ids)) == len(ids)
    assert all(UUID4.match(i) for i in ids[:2_000])


def test_times_are_spread_over_the_utc_day(day_events: pa.Table) -> None:
    played_at = day_events.column("played_at")
    hours = np.bincount(pc.hour(played_at).to_numpy(), minlength=24)

    assert pc.min(played_at).as_py() >= dt.datetime(2026, 4, 20)
    assert pc.max(played_at).as_py() < dt.datetime(2026, 4, 21)
    assert (hours > 0).all()
    assert hours[18:22].sum() > hours[2:6].sum() * 3  # an evening peak, quiet small hours


def test_durations_never_exceed_the_tracks_length(day_events: pa.Table) -> None:
    cat = catalogue()
    length = cat.track_length_s[day_events.column("track_id").to_numpy() - 1]
    duration = day_events.column("duration_seconds").to_numpy()

    assert (duration >= 0).all()
    assert (duration <= length).all()
    assert (duration == length).mean() > 0.3  # most plays finish; some are skipped


def test_popularity_is_skewed_with_the_tutorial_artists_on_top(day_events: pa.Table) -> None:
    counts = day_events.group_by("artist").aggregate([("play_id", "count")]).sort_by([("play_id_count", "descending")])
    top5 = set(counts.column("artist").to_pylist()[:5])
    plays = counts.column("play_id_count").to_numpy()

    assert top5 == {artist for artist, _ in TUTORIAL_ARTISTS}
    assert plays[:10].sum() > plays.sum() * 0.4  # Zipf-like head
    assert len(plays) > 100  # and a long tail


def test_tracks_keep_their_artist_and_title(day_events: pa.Table) -> None:
    pairs = day_events.select(["track_id", "artist", "title"]).group_by(["track_id", "artist", "title"]).aggregate([])
    tracks = pairs.column("track_id").to_pylist()

    assert len(tracks) == len(set(tracks))
    weeknd = {row["title"] for row in pairs.to_pylist() if row["artist"] == "The Weeknd"}
    assert weeknd == {"Blinding Lights", "Save Your Tears", "Starboy"}


def test_users_have_a_home_country_and_devices_from_the_mix(day_events: pa.Table) -> None:
    countries = set(day_events.column("country").to_pylist())
    devices = set(day_events.column("device").to_pylist())
    per_user = day_events.group_by("user_id").aggregate([("country", "count_distinct")])

    assert {"US", "UK", "DE", "BR", "JP", "IR", "CA", "AU"} <= countries
    assert devices == {"mobile", "desktop", "tablet", "smart_speaker", "tv"}
    assert (per_user.column("country_count_distinct").to_numpy() == 1).mean() > 0.9
