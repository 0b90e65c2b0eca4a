"""The advisor's rules on synthetic probe records: each rule fires on the evidence it names."""

import math

import pytest

from visionmtl.mtl.advice import (
    MAX_WEIGHT,
    Cost,
    cagrad_c,
    dwa_temperature,
    format_advice,
    norm_weights,
    recommend,
)

TASKS = ["det", "sem"]


def _records(
    cos: float, norms: tuple[float, float], affinity: tuple[float, float] = (0.2, 0.2), n: int = 20
) -> list[dict]:
    """Probe step records: cosine, gradient norms, losses and TAG affinities (own steps 1.0)."""
    return [
        {
            "step": 3 * k,
            "grad_cos/det|sem": cos,
            "grad_norm/det": norms[0],
            "grad_norm/sem": norms[1],
            "loss/det": 2.0 - 0.05 * k,
            "loss/sem": 1.0,
            "affinity/det>det": 1.0,
            "affinity/sem>sem": 1.0,
            "affinity/det>sem": affinity[0],
            "affinity/sem>det": affinity[1],
        }
        for k in range(n)
    ]


def test_aligned_balanced_tasks_get_equal_fixed_weights_and_hard_sharing() -> None:
    advice = recommend(_records(0.3, (1.0, 2.0)), TASKS)
    assert (advice.share, advice.method, advice.sharing) == (True, "fixed", "hard")
    assert "mtl.weights" not in advice.settings
    assert advice.pairs[0].conflict_share == 0.0 and advice.pairs[0].norm_ratio == 2.0


def test_conflicting_gradients_get_cagrad_with_c_from_the_conflict_share() -> None:
    records = _records(-0.2, (1.0, 1.0))
    for record in records[::4]:  # a quarter of the steps agree
        record["grad_cos/det|sem"] = 0.1
    advice = recommend(records, TASKS)
    assert advice.method == "cagrad"
    share = advice.pairs[0].conflict_share
    assert share == pytest.approx(12 / 15)  # after warm-up: steps 15..57, agreeing at 24, 36, 48
    assert advice.settings["mtl.cagrad_c"] == round(0.8 * share, 3)
    assert cagrad_c(advice.pairs) == advice.settings["mtl.cagrad_c"]


def test_sign_noise_around_zero_is_not_conflict() -> None:
    records = _records(-0.001, (1.0, 1.0))
    assert recommend(records, TASKS).method == "fixed"


def test_unbalanced_norms_keep_equal_weights_and_offer_the_evening_ones() -> None:
    """Norm-evening weights lost to equal weights on both reports (docs/advisor.md): they are
    offered as the tuned setting, not recommended."""
    advice = recommend(_records(0.1, (0.02, 2.0)), TASKS)
    assert advice.method == "fixed" and "mtl.weights" not in advice.settings
    assert any("100x" in reason and "equal fixed weights" in reason for reason in advice.reasons)
    weights = advice.tuned["mtl.weights"]
    assert weights["det"] == pytest.approx(10.0) and weights["sem"] == pytest.approx(0.1)
    assert weights["det"] * 0.02 == pytest.approx(weights["sem"] * 2.0)


def test_weights_are_bounded() -> None:
    weights = norm_weights(_records(0.1, (1e-6, 1.0)), TASKS)
    assert weights == {"det": MAX_WEIGHT, "sem": 1 / MAX_WEIGHT}


def test_two_way_harm_means_train_apart_one_way_means_cross_stitch() -> None:
    apart = recommend(_records(0.1, (1.0, 1.0), affinity=(-0.5, -0.3)), TASKS)
    assert not apart.share and apart.apart == [("det", "sem")]
    one_way = recommend(_records(0.1, (1.0, 1.0), affinity=(-0.5, 0.3)), TASKS)
    assert one_way.share and one_way.sharing == "cross_stitch"


def test_too_few_measurements_do_not_trigger_surgery() -> None:
    advice = recommend(_records(-0.5, (1.0, 1.0), n=4), TASKS)
    assert advice.method == "fixed" and any("too few" in r for r in advice.reasons)


def test_warm_up_records_are_left_out() -> None:
    records = _records(0.3, (1.0, 1.0))
    for record in records[:4]:  # conflict only in the first fifth: warm-up
        record["grad_cos/det|sem"] = -0.9
    assert recommend(records, TASKS).pairs[0].conflict_share == 0.0


def test_dwa_temperature_follows_the_spread_of_loss_descent() -> None:
    steady = dwa_temperature(_records(0.1, (1.0, 1.0)), TASKS)
    spread = 1.0 - 1.5 / 1.75  # det's loss ratio between halves vs sem's 1.0 (20 records)
    assert steady == pytest.approx(max(0.5, abs(spread) / math.log(2)), abs=0.05)
    assert 0.5 <= steady <= 2.0


def test_format_prints_evidence_costs_and_the_overrides() -> None:
    costs = {
        "fixed/hard": Cost(params=3_000_000, step_s=1.0, peak_mb=None, full_run_s=600.0),
        "cagrad/hard": Cost(params=3_000_000, step_s=2.5, peak_mb=512.0, full_run_s=7200.0),
    }
    text = format_advice(recommend(_records(-0.3, (1.0, 1.0)), TASKS, costs))
    assert "| det\\|sem | -0.300 | 100% |" in text
    assert "| cagrad/hard | 3.00 | 2.500 | 2.50 | 512 | 2.0 h |" in text
    assert "--set mtl.method=cagrad mtl.sharing=hard mtl.cagrad_c=0.8" in text
