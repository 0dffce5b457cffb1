"""The pick: the documented rule, on hand-made scorecards."""
from __future__ import annotations

import math

import pytest

from studio.evaluation.pick import DRIFT_MARGIN, Row, pick_checkpoint

NAN = math.nan


def row(step, subject, prompt=0.5, drift=0.1, diversity=0.5):
    return Row("base" if step == 0 else f"step-{step:06d}", step, subject, prompt, drift, diversity)


BASE = row(0, 0.0, prompt=0.6, drift=0.1)


def test_highest_subject_fidelity_within_the_margins_wins_over_a_later_overtrained_one():
    rows = [row(200, 0.6), row(400, 0.9, drift=0.15), row(600, 0.95, drift=0.1 + DRIFT_MARGIN + 0.2)]
    pick = pick_checkpoint(rows, BASE)
    assert pick.checkpoint == "step-000400" and pick.step == 400
    assert "0.90" in pick.why and "margins" in pick.why


def test_lost_prompt_fidelity_rules_a_checkpoint_out():
    rows = [row(200, 0.7, prompt=0.55), row(400, 0.95, prompt=0.2)]
    assert pick_checkpoint(rows, BASE).checkpoint == "step-000200"


def test_ties_go_to_prompt_fidelity_then_lower_drift_then_the_later_step():
    assert pick_checkpoint([row(200, 0.8, prompt=0.7), row(400, 0.8, prompt=0.6)], BASE).step == 200
    assert pick_checkpoint([row(200, 0.8, drift=0.12), row(400, 0.8, drift=0.15)], BASE).step == 200
    assert pick_checkpoint([row(200, 0.8), row(400, 0.8)], BASE).step == 400


def test_when_all_drift_too_far_an_untrained_checkpoint_does_not_win_by_default():
    rows = [row(100, 0.0, drift=0.1), row(400, 0.9, drift=0.5), row(600, 0.95, drift=0.9)]
    pick = pick_checkpoint(rows, BASE)
    assert pick.step == 400 and "no checkpoint learned the subject within the margins" in pick.why


def test_a_checkpoint_no_better_than_the_base_model_is_not_picked_for_staying_within_the_margins():
    pick = pick_checkpoint([row(100, 0.0), row(600, 0.9, drift=0.6)], BASE)
    assert pick.step == 600


def test_unscored_checkpoints_are_skipped_and_nothing_scored_keeps_the_last_step():
    assert pick_checkpoint([row(200, NAN), row(400, 0.5)], BASE).step == 400
    pick = pick_checkpoint([row(200, NAN), row(400, NAN)], BASE)
    assert pick.step == 400 and "last step" in pick.why


def test_without_a_base_score_the_highest_subject_fidelity_wins():
    assert pick_checkpoint([row(200, 0.7, drift=0.9), row(400, 0.6)], row(0, NAN)).step == 200
    with pytest.raises(ValueError):
        pick_checkpoint([], BASE)
