"""The labelled duplicates data set keeps its contract: every tier present, the same bytes for a seed, transforms
that change the bytes, exact copies that decode to the same pixels, and a Parquet file ingest can read."""
from __future__ import annotations

import io
from collections import Counter

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from helpers.duplicate_data import EXACT_KINDS, NEAR_KINDS, TIERS, make_duplicate_set, write_parquet


@pytest.fixture(scope="module")
def dataset():
    return make_duplicate_set(originals=6, seed=3, photo_share=0.5)


def pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def test_every_tier_and_transform_is_present(dataset):
    tiers = Counter(pair.tier for pair in dataset.pairs)
    assert set(tiers) == set(TIERS)
    assert tiers["exact"] == 6 * len(EXACT_KINDS) and tiers["near"] == 6 * len(NEAR_KINDS) and tiers["similar"] == 6
    for pair in dataset.pairs:
        assert dataset.truth(pair.left, pair.right) == pair.tier


def test_the_same_seed_gives_the_same_bytes_and_another_seed_other_images(dataset):
    again = make_duplicate_set(originals=6, seed=3, photo_share=0.5)
    assert again.images == dataset.images and again.pairs == dataset.pairs
    other = make_duplicate_set(originals=6, seed=4, photo_share=0.5)
    assert not set(other.images.values()) & set(dataset.images.values())


def test_exact_copies_decode_to_the_same_pixels_and_only_the_byte_copy_has_equal_bytes(dataset):
    for pair in (p for p in dataset.pairs if p.tier == "exact"):
        left, right = dataset.images[pair.left], dataset.images[pair.right]
        assert (left == right) == (pair.kind == "byte-copy")
        assert np.array_equal(pixels(left), pixels(right))


def test_near_duplicates_and_similar_shots_change_the_bytes_and_the_pixels(dataset):
    for pair in (p for p in dataset.pairs if p.tier in ("near", "similar", "different")):
        left, right = dataset.images[pair.left], dataset.images[pair.right]
        assert left != right
        a, b = pixels(left), pixels(right)
        assert a.shape != b.shape or not np.array_equal(a, b), pair


def test_crops_keep_at_least_90_percent_of_each_side(dataset):
    for pair in (p for p in dataset.pairs if p.kind == "crop"):
        (height, width), (crop_height, crop_width) = pixels(dataset.images[pair.left]).shape[:2], \
            pixels(dataset.images[pair.right]).shape[:2]
        assert 0.89 * width <= crop_width < width and 0.89 * height <= crop_height < height


def test_parquet_holds_every_image_with_its_caption_and_group(dataset, tmp_path):
    table = pq.read_table(write_parquet(dataset, tmp_path / "dups.parquet")).to_pylist()
    assert [row["id"] for row in table] == list(dataset.images)
    assert all(row["image"] == dataset.images[row["id"]] and row["caption"] for row in table)
    assert Counter(row["tier"] for row in table) == {"exact": 6 * (1 + len(EXACT_KINDS)) + 6,
                                                    "near": 6 * len(NEAR_KINDS)}
