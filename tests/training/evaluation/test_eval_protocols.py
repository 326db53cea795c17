"""Protocol bookkeeping: SYSU trial galleries, RegDB directions, LLCM single-shot galleries, camera rules."""

from __future__ import annotations

import random
from collections import Counter

import numpy as np
import pytest
from eval_fakes import SYSU_INFRARED, SYSU_VISIBLE

from vireid.training.data import ImageRecord, llcm_test
from vireid.training.evaluation import (
    camera_number,
    llcm_settings,
    regdb_settings,
    single_shot_gallery,
    sysu_settings,
)
from vireid.training.evaluation._protocols import exclusion_mask


def test_sysu_trials_share_queries_and_draw_one_image_per_pid_and_camera(fake_sysu) -> None:
    settings = sysu_settings(fake_sysu, modes=["all", "indoor"], trials=[0, 1, 2, 3])
    assert [(s.name, s.trial) for s in settings] == [(m, t) for m in ("all", "indoor") for t in range(4)]
    expected_queries = sum(2 * len(cams) for cams in SYSU_INFRARED.values())
    for s in settings:
        assert len(s.query) == expected_queries and s.query == settings[0].query
        assert {r.modality for r in s.query} == {"infrared"} and {r.modality for r in s.gallery} == {
            "visible"
        }
        allowed = (1, 2, 4, 5) if s.name == "all" else (1, 2)
        keys = Counter((r.pid, camera_number(r.camera)) for r in s.gallery)
        expected = {(pid, c) for pid, cams in SYSU_VISIBLE.items() for c in cams if c in allowed}
        assert set(keys) == expected and max(keys.values()) == 1
    galleries = {tuple(str(r.path) for r in s.gallery) for s in settings if s.name == "all"}
    assert len(galleries) > 1  # trials resample the gallery
    again = sysu_settings(fake_sysu, modes=["all"], trials=[2])[0]
    assert again.gallery == settings[2].gallery  # seeded: the same trial gives the same gallery


def test_sysu_camera_rule_in_protocol(fake_sysu) -> None:
    setting = sysu_settings(fake_sysu, modes=["all"], trials=[0])[0]
    mask = exclusion_mask("sysu", setting)
    for i, q in enumerate(setting.query):
        for j, g in enumerate(setting.gallery):
            assert mask[i, j] == (q.camera == "cam3" and g.camera == "cam2")


def test_sysu_bad_mode_raises(fake_sysu) -> None:
    with pytest.raises(ValueError, match="unknown SYSU mode"):
        sysu_settings(fake_sysu, modes=["outdoor"], trials=[0])


def test_regdb_both_directions_per_split(fake_regdb) -> None:
    settings = regdb_settings(fake_regdb, splits=[1, 2])
    assert [(s.name, s.trial) for s in settings] == [
        ("visible_to_thermal", 1),
        ("thermal_to_visible", 1),
        ("visible_to_thermal", 2),
        ("thermal_to_visible", 2),
    ]
    v2t, t2v = settings[0], settings[1]
    assert v2t.query == t2v.gallery and v2t.gallery == t2v.query
    assert (v2t.query_modality, v2t.gallery_modality) == ("visible", "infrared")
    assert len(v2t.query) == len(v2t.gallery) == 18
    assert {r.pid for r in settings[2].query} == set(range(3, 9))
    assert exclusion_mask("regdb", v2t) is None
    with pytest.raises(ValueError):
        regdb_settings(fake_regdb, splits=[11])


def test_single_shot_gallery_follows_the_seeded_rule() -> None:
    records = [
        ImageRecord(path=f"/x/{pid}/c{cam}_{k}.jpg", modality="visible", camera=f"cam{cam}", pid=pid)
        for pid in (3, 1, 2)
        for cam in (2, 1)
        for k in range(4)
    ]
    for trial in range(5):
        drawn = single_shot_gallery(records, trial=trial)
        rng = random.Random()
        rng.seed(trial)
        expected = []
        for pid in (1, 2, 3):
            for cam in (1, 2):
                paths = sorted(f"/x/{pid}/c{cam}_{k}.jpg" for k in range(4))
                expected.append(rng.choice(paths))
        assert [str(r.path) for r in drawn] == expected
    draws = {tuple(str(r.path) for r in single_shot_gallery(records, trial=t)) for t in range(5)}
    assert len(draws) > 1


def test_llcm_settings_both_directions_and_same_camera_rule(fake_llcm) -> None:
    settings = llcm_settings(fake_llcm, trials=[0, 1])
    assert [(s.name, s.trial) for s in settings] == [
        ("visible_to_infrared", 0),
        ("visible_to_infrared", 1),
        ("infrared_to_visible", 0),
        ("infrared_to_visible", 1),
    ]
    for s in settings:
        assert len(s.query) == 16 and len(s.gallery) == 8  # all queries; 4 ids x 2 cameras single-shot
        mask = exclusion_mask("llcm", s)
        expected = np.array([[q.pid == g.pid and q.camera == g.camera for g in s.gallery] for q in s.query])
        np.testing.assert_array_equal(mask, expected)
        assert mask.any()  # cam1 holds both modalities in the fake layout
    _, pool = llcm_test(fake_llcm, direction="visible_to_infrared")
    assert settings[0].gallery == tuple(single_shot_gallery(pool, trial=0))


def test_camera_number() -> None:
    assert camera_number("cam3") == 3 and camera_number("12") == 12 and camera_number(4) == 4
    assert camera_number("test_vis/cam7") == 7
    with pytest.raises(ValueError):
        camera_number("visible")
