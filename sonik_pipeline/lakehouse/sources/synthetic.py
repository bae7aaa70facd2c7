"""The synthetic source: a deterministic, realistic stream of plays (the same day always gives the same events)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache

import numpy as np
import pyarrow as pa

from sonik_pipeline.lakehouse.days import epoch_day
from sonik_pipeline.lakehouse.sources.events import BATCH_ROWS, ArrowRows, RawBatch

TUTORIAL_ARTISTS: list[tuple[str, list[str]]] = [
    ("The Weeknd", ["Blinding Lights", "Save Your Tears", "Starboy"]),
    ("Taylor Swift", ["Anti-Hero", "Cruel Summer", "Lavender Haze"]),
    ("Drake", ["God's Plan", "Hotline Bling", "One Dance"]),
    ("Bad Bunny", ["Tití Me Preguntó", "Me Porto Bonito"]),
    ("Billie Eilish", ["Bad Guy", "Lovely", "Happier Than Ever"]),
]
# Listening is concentrated in a few markets; the tutorial's eight lead, others trail.
COUNTRY_WEIGHTS: dict[str, float] = {
    "US": 30,
    "UK": 10,
    "DE": 9,
    "BR": 9,
    "JP": 7,
    "IR": 3,
    "CA": 5,
    "AU": 4,
    "FR": 5,
    "MX": 5,
    "ES": 3,
    "IT": 3,
    "NL": 2,
    "SE": 2,
    "IN": 2,
    "KR": 1,
}
DEVICE_WEIGHTS: dict[str, float] = {"mobile": 58, "desktop": 20, "tablet": 7, "smart_speaker": 8, "tv": 7}
TIER_WEIGHTS: dict[str, float] = {"Free": 60, "Premium": 30, "Family": 10}
# Plays per UTC hour: quiet small hours, an evening peak.
HOUR_WEIGHTS = np.array([3, 2, 1.5, 1, 1, 1.5, 3, 5, 6, 6, 6, 6.5, 7, 7, 7, 7.5, 8, 9, 10, 10.5, 10, 9, 7, 5])

_WORDS_A = [
    "Midnight",
    "Velvet",
    "Neon",
    "Paper",
    "Golden",
    "Silent",
    "Electric",
    "Crimson",
    "Lunar",
    "Wild",
    "Glass",
    "Northern",
    "Echo",
    "Static",
    "Amber",
    "Hollow",
    "Blue",
    "Solar",
    "Lost",
    "Broken",
    "Quiet",
    "Sugar",
    "Iron",
    "Velour",
    "Copper",
    "Honey",
    "Violet",
    "Frozen",
    "Royal",
]
_WORDS_B = [
    "Harbor",
    "Foxes",
    "Lanterns",
    "Drive",
    "Rivers",
    "Motel",
    "Parade",
    "Saints",
    "Avenue",
    "Hearts",
    "Signals",
    "Tides",
    "Wolves",
    "Satellites",
    "Gardens",
    "Ghosts",
    "Mirrors",
    "Kings",
    "Ashes",
    "Comets",
    "Rooms",
    "Waves",
    "Pilots",
    "Letters",
    "Summer",
    "Machines",
    "Years",
]
_TITLE_WORDS = [
    "Love",
    "Night",
    "Fire",
    "Dance",
    "Home",
    "Stay",
    "Run",
    "Light",
    "Dream",
    "Rain",
    "Gold",
    "Heart",
    "Sky",
    "Ocean",
    "Alone",
    "Forever",
    "Tonight",
    "Lights",
    "Slow",
    "Higher",
    "Roses",
    "Fever",
    "Shadow",
    "Paradise",
    "Mercy",
    "Runaway",
    "Diamonds",
    "Thunder",
    "Sunday",
]

CATALOGUE_SEED = 20260420
N_ARTISTS = 400
N_USERS = 100_000


@dataclass(frozen=True)
class Catalogue:
    """The world the synthetic stream plays in: tracks, their artists and lengths, and listeners."""

    track_ids: np.ndarray  # int64
    track_artist: pa.Array  # string, per track
    track_title: pa.Array  # string, per track
    track_length_s: np.ndarray  # int32
    track_sampler: np.ndarray  # popularity, Zipf-like
    user_country: np.ndarray  # index into countries, per user
    user_device: np.ndarray  # index into devices, per user
    user_sampler: np.ndarray  # activity, heavy-tailed
    user_tier: np.ndarray  # index into tiers, per user (stable: a user keeps their tier)
    countries: pa.Array
    devices: pa.Array
    tiers: pa.Array


def _cdf(weights: np.ndarray) -> np.ndarray:
    cdf = np.cumsum(weights, dtype=np.float64)
    return cdf / cdf[-1]


SAMPLER_BITS = 20


def _sampler(weights: np.ndarray) -> np.ndarray:
    """A lookup table for O(1) weighted sampling: ``table[rng.integers(0, len(table), n)]``.

    Inverse-transform sampling quantised to 2**20 steps (probability resolution ~1e-6), which avoids
    a binary search per event over 100,000 users.
    """
    steps = (np.arange(1 << SAMPLER_BITS) + 0.5) / (1 << SAMPLER_BITS)
    return np.searchsorted(_cdf(weights), steps, side="right").astype(np.int32)


@cache
def catalogue() -> Catalogue:
    """Built once from a fixed seed: the same artists, tracks and users on every machine."""
    rng = np.random.default_rng(CATALOGUE_SEED)
    names = [a for a, _ in TUTORIAL_ARTISTS]
    pairs = rng.permutation(len(_WORDS_A) * len(_WORDS_B))
    for p in pairs:
        if len(names) >= N_ARTISTS:
            break
        a, b = _WORDS_A[p // len(_WORDS_B)], _WORDS_B[p % len(_WORDS_B)]
        names.append(f"The {a} {b}" if p % 3 == 0 else f"{a} {b}")
    artist_weight = 1.0 / np.arange(1, len(names) + 1) ** 1.1  # tutorial artists are the biggest stars

    artists, titles, weights = [], [], []
    for i, artist in enumerate(names):
        if i < len(TUTORIAL_ARTISTS):
            songs = TUTORIAL_ARTISTS[i][1]
        else:
            n_songs = 3 + int(rng.integers(0, 20))
            songs = list(
                dict.fromkeys(
                    f"{_TITLE_WORDS[int(x)]} {_TITLE_WORDS[int(y)]}" if x != y else _TITLE_WORDS[int(x)]
                    for x, y in rng.integers(0, len(_TITLE_WORDS), size=(n_songs, 2))
                )
            )
        within = 1.0 / np.arange(1, len(songs) + 1) ** 0.9
        artists += [artist] * len(songs)
        titles += songs
        weights.append(artist_weight[i] * within / within.sum())
    n_tracks = len(titles)
    lengths = np.clip(rng.normal(215, 45, n_tracks), 90, 600).astype(np.int32)

    countries = list(COUNTRY_WEIGHTS)
    devices = list(DEVICE_WEIGHTS)
    return Catalogue(
        track_ids=np.arange(1, n_tracks + 1, dtype=np.int64),
        track_artist=pa.array(artists, pa.large_string()),
        track_title=pa.array(titles, pa.large_string()),
        track_length_s=lengths,
        track_sampler=_sampler(np.concatenate(weights)),
        user_country=np.searchsorted(_cdf(np.array(list(COUNTRY_WEIGHTS.values()))), rng.random(N_USERS), side="right"),
        user_device=np.searchsorted(_cdf(np.array(list(DEVICE_WEIGHTS.values()))), rng.random(N_USERS), side="right"),
        user_sampler=_sampler(rng.lognormal(0.0, 1.2, N_USERS)),
        user_tier=np.searchsorted(_cdf(np.array(list(TIER_WEIGHTS.values()))), rng.random(N_USERS), side="right"),
        tiers=pa.array(list(TIER_WEIGHTS), pa.large_string()),
        countries=pa.array(countries, pa.large_string()),
        devices=pa.array(devices, pa.large_string()),
    )


_HEX_PAIRS = np.array([ord(f"{b:02x}"[0]) | ord(f"{b:02x}"[1]) << 8 for b in range(256)], dtype="<u2")
# Where each of a UUID's 36 characters comes from among 32 hex digits plus a trailing "-" (index 32).
_UUID_LAYOUT = np.array([*range(8), 32, *range(8, 12), 32, *range(12, 16), 32, *range(16, 20), 32, *range(20, 32)])


def _uuid4_strings(rng: np.random.Generator, n: int) -> pa.Array:
    """Random (version 4) UUIDs as canonical strings, formatted without a Python loop."""
    raw = np.frombuffer(rng.bytes(16 * n), dtype=np.uint8).reshape(n, 16).copy()
    raw[:, 6] = (raw[:, 6] & 0x0F) | 0x40
    raw[:, 8] = (raw[:, 8] & 0x3F) | 0x80
    digits = np.empty((n, 33), dtype=np.uint8)
    digits[:, :32] = _HEX_PAIRS[raw].view(np.uint8).reshape(n, 32)
    digits[:, 32] = ord("-")
    text = np.ascontiguousarray(digits[:, _UUID_LAYOUT])
    offsets = np.arange(0, 36 * n + 1, 36, dtype=np.int64)
    return pa.LargeStringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(text))


def _day_rng(day: dt.date, seed: int, batch: int) -> np.random.Generator:
    return np.random.default_rng([seed, day.toordinal(), batch])


def synthetic_batch(day: dt.date, n: int, seed: int = 0, batch: int = 0) -> pa.Table:
    """``n`` play events on ``day`` (UTC); the same arguments always give the same events."""
    cat = catalogue()
    rng = _day_rng(day, seed, batch)
    track = cat.track_sampler[rng.integers(0, len(cat.track_sampler), n)]
    user = cat.user_sampler[rng.integers(0, len(cat.user_sampler), n)]

    hour = np.searchsorted(_cdf(HOUR_WEIGHTS), rng.random(n), side="right")
    micros = hour * 3_600_000_000 + rng.integers(0, 3_600_000_000, n)
    day_start_us = epoch_day(day) * 86_400_000_000
    played_at = pa.array(day_start_us + micros, pa.timestamp("us"))

    # A quarter of plays are skipped early, most others play to the end; never past the track's length.
    length = cat.track_length_s[track]
    skipped = rng.random(n) < 0.25
    partial = rng.random(n) < 0.15
    duration = np.where(
        skipped,
        rng.integers(5, 31, n),
        np.where(partial, (length * rng.uniform(0.3, 1.0, n)).astype(np.int32), length),
    )
    duration = np.minimum(duration, length).astype(np.int32)

    travelling = rng.random(n) < 0.03
    country = np.where(travelling, rng.integers(0, len(cat.countries), n), cat.user_country[user])
    other_device = rng.random(n) < 0.25
    device = np.where(other_device, rng.integers(0, len(cat.devices), n), cat.user_device[user])

    def decode(indices: np.ndarray, dictionary: pa.Array) -> pa.Array:
        return pa.DictionaryArray.from_arrays(pa.array(indices.astype(np.int32)), dictionary).dictionary_decode()

    return pa.table(
        {
            "play_id": _uuid4_strings(rng, n),
            "user_id": pa.array((user + 1).astype(np.int64)),
            "track_id": pa.array(cat.track_ids[track]),
            "artist": decode(track, cat.track_artist),
            "title": decode(track, cat.track_title),
            "played_at": played_at,
            "duration_seconds": pa.array(duration),
            "country": decode(country, cat.countries),
            "device": decode(device, cat.devices),
            "subscription_tier": decode(cat.user_tier[user], cat.tiers),
        }
    )


def synthetic_events(day: dt.date, events_per_day: int, seed: int = 0) -> Iterator[RawBatch]:
    """The day's synthetic events in batches of at most ``BATCH_ROWS``."""
    for batch, start in enumerate(range(0, events_per_day, BATCH_ROWS)):
        n = min(BATCH_ROWS, events_per_day - start)
        yield ArrowRows(synthetic_batch(day, n, seed, batch), source_file=f"synthetic://plays/{day}/{batch}")
