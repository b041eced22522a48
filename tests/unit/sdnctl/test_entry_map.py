"""LayeredEntries: a mapping of changes over a shared base reads exactly as the plain dict it stands
for, through every change, removal and fold."""

from __future__ import annotations

import random

import pytest

from sdnctl.entry_map import FOLD_FRACTION, LayeredEntries, layers, with_changes


def check_same(layered, model: dict) -> None:
    assert len(layered) == len(model)
    assert dict(layered) == model and layered == model
    assert sorted(layered) == sorted(model)
    assert sorted(layered.items()) == sorted(model.items())
    assert sorted(layered.values()) == sorted(model.values())
    for key in [*model, "absent", "k-1"]:
        assert (key in layered) == (key in model)
        assert layered.get(key, "default") == model.get(key, "default")
        if key in model:
            assert layered[key] == model[key]
        else:
            with pytest.raises(KeyError):
                layered[key]


@pytest.mark.parametrize("seed", range(12))
def test_random_changes_read_as_the_plain_dict(seed: int) -> None:
    rng = random.Random(seed)
    model = {f"k{i}": (i,) for i in range(rng.randint(0, 60))}
    entries = dict(model)
    base_before = dict(entries)
    for step in range(200):
        changes: dict[str, tuple[int, ...] | None] = {}
        for _ in range(rng.randint(0, 6)):
            key = f"k{rng.randint(0, 80)}"
            changes[key] = None if rng.random() < 0.3 else (step, rng.randint(0, 9))
        previous, previous_model = entries, dict(model)
        entries = with_changes(entries, changes)
        for key, value in changes.items():
            if value is None:
                model.pop(key, None)
            else:
                model[key] = value
        check_same(entries, model)
        check_same(previous, previous_model)  # never changed in place
    assert base_before == {f"k{i}": (i,) for i in range(len(base_before))}


def test_small_changes_share_the_base_and_large_ones_fold_into_a_dict() -> None:
    base = {f"k{i}": (i,) for i in range(100)}
    layered = with_changes(base, {"k1": (-1,), "k2": None, "new": (0,)})
    assert isinstance(layered, LayeredEntries) and layered.base is base
    assert layers(layered) == (base, {"k1": (-1,), "k2": None, "new": (0,)})
    assert layers(base) == (base, {})
    assert with_changes(layered, {}) is layered
    many = {f"k{i}": (i, i) for i in range(10, 10 + 100 // FOLD_FRACTION + 1)}
    folded = with_changes(layered, many)
    assert type(folded) is dict
    assert folded["k1"] == (-1,) and "k2" not in folded and folded["new"] == (0,) and folded["k10"] == (10, 10)
    assert len(folded) == 100
