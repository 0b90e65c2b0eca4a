"""The advisor's rules: probe evidence (gradient cosines, gradient-norm ratios, lookahead affinity,
loss descent) and measured costs -> share or not, which sharing design, which balancing method
and its one hyper-parameter. Pure functions over step records; the probe that produces them is
:mod:`visionmtl.engine.probe`, the command ``visionmtl advise``.

Where each rule comes from (docs/advisor.md says more):

- Share or train apart, and the sharing design: lookahead inter-task affinity (Fifty et al. 2021,
  TAG), read per direction in units of the target's own step (:func:`normalised_affinity`).
  Tasks whose steps raise each other's losses in both directions are the pairs TAG and Standley
  et al. 2020 put in different networks. A one-way harm is a reason for task-specific capacity
  that can learn how much to share: cross-stitch units (Misra et al. 2016).
- Balancing: gradient surgery is for conflicting gradients, cosine < 0 on the shared parameters,
  most often (Yu et al. 2020, PCGrad; Liu et al. 2021, CAGrad). Without conflict, equal fixed
  weights: tuned unit scalarisation matches the balancing methods on standard benchmarks (Kurin
  et al. 2022; Xin et al. 2022), at the lowest cost. Gradient norms an order of magnitude apart
  (GradNorm's premise, Chen et al. 2018) are reported with the weights that would even them out,
  as a setting to try only: on both of this project's reports those weights came last.

The thresholds are written once here and were set from those papers' regimes before any probe
was run on this project's data; they are not fitted to it.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from visionmtl.mtl.affinity import normalised_affinity, parse_affinity_key

# A pair conflicts when its gradient cosine is negative in at least this share of the probe's
# logged steps AND its mean cosine is below CONFLICT_MEAN_COS (a sign flip around 0 is noise).
CONFLICT_SHARE = 0.5
CONFLICT_MEAN_COS = -0.02
# Gradient norms this many times apart are reported, with the weights that would even them out
# as a setting to try; they are not recommended: on both of this project's reports (docs/
# advisor.md) those weights came last, and equal weights are the literature's default.
NORM_RATIO = 10.0
# A directed affinity below this (in units of the target's own step) is harm; both ways: apart.
HARM = -0.1
# Weights from gradient norms are kept within this factor of 1 (a norm measured near 0 would
# otherwise ask for an unbounded weight).
MAX_WEIGHT = 10.0
# A pair's cosines count only with this many logged steps that labelled both tasks.
MIN_SAMPLES = 5
# The first share of the probe is warm-up (lr warm-up, heads far from their targets): left out.
WARMUP_SHARE = 0.25


@dataclass
class PairEvidence:
    """What the probe measured for tasks ``a`` and ``b`` (``a`` before ``b`` in model.tasks)."""

    a: str
    b: str
    cos_mean: float  # mean gradient cosine on the shared parameters
    conflict_share: float  # share of logged steps with cosine < 0
    norm_ratio: float  # median of max(|g_a|, |g_b|) / min(...)
    affinity_ab: float  # a step on a, for b's loss, in units of b's own step (nan: not measured)
    affinity_ba: float
    samples: int  # logged steps with both tasks in the batch


@dataclass
class Cost:
    """One candidate's cost, measured on the probe's batches."""

    params: int
    step_s: float
    peak_mb: float | None  # CUDA peak allocated memory; None on the CPU
    full_run_s: float  # step_s times the full run's optimizer steps (evaluation not included)


@dataclass
class Advice:
    """The recommendation, the tuned hyper-parameters and the evidence behind them."""

    share: bool
    apart: list[tuple[str, str]]
    sharing: str
    method: str
    settings: dict[str, Any]  # the --set overrides that make the recommended config
    tuned: dict[str, Any]  # each method's hyper-parameter as the probe sets it
    reasons: list[str]
    pairs: list[PairEvidence]
    costs: dict[str, Cost] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return _finite(asdict(self))


def _finite(value: Any) -> Any:
    """JSON-safe: nan -> None, tuples -> lists."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(item) for item in value]
    return value


def settled(records: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The records after the probe's warm-up share (by step)."""
    if not records:
        return []
    last = max(int(record.get("step", 0)) for record in records)
    return [r for r in records if int(r.get("step", 0)) >= WARMUP_SHARE * last]


def _mean(values: Sequence[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return statistics.fmean(finite) if finite else math.nan


def pair_evidence(records: Sequence[Mapping[str, Any]], tasks: Sequence[str]) -> list[PairEvidence]:
    """Per pair of ``tasks``: the cosine, conflict share, norm ratio and directed affinities over
    ``records`` (step records holding ``grad_cos/a|b``, ``grad_norm/t`` and ``affinity/i>j``)."""
    affinity_sums: dict[str, list[float]] = {}
    for record in records:
        for key, value in record.items():
            if parse_affinity_key(key) and value is not None and math.isfinite(value):
                affinity_sums.setdefault(key, []).append(float(value))
    directed = normalised_affinity({key: _mean(v) for key, v in affinity_sums.items()})
    pairs = []
    for i, a in enumerate(tasks):
        for b in tasks[i + 1 :]:
            cosines = [float(r[f"grad_cos/{a}|{b}"]) for r in records if f"grad_cos/{a}|{b}" in r]
            cosines = [c for c in cosines if math.isfinite(c)]
            ratios = [
                max(r[f"grad_norm/{a}"], r[f"grad_norm/{b}"])
                / min(r[f"grad_norm/{a}"], r[f"grad_norm/{b}"])
                for r in records
                if min(r.get(f"grad_norm/{a}", 0.0), r.get(f"grad_norm/{b}", 0.0)) > 0
            ]
            pairs.append(
                PairEvidence(
                    a=a,
                    b=b,
                    cos_mean=_mean(cosines),
                    conflict_share=sum(c < 0 for c in cosines) / len(cosines)
                    if cosines
                    else math.nan,
                    norm_ratio=statistics.median(ratios) if ratios else math.nan,
                    affinity_ab=directed.get((a, b), math.nan),
                    affinity_ba=directed.get((b, a), math.nan),
                    samples=len(cosines),
                )
            )
    return pairs


def norm_weights(records: Sequence[Mapping[str, Any]], tasks: Sequence[str]) -> dict[str, float]:
    """Fixed weights that even out the tasks' median gradient norms on the shared parameters
    (w_t = geometric mean of the norms / norm_t, within [1 / MAX_WEIGHT, MAX_WEIGHT]), rounded."""
    norms = {}
    for task in tasks:
        values = [float(r[f"grad_norm/{task}"]) for r in records if r.get(f"grad_norm/{task}")]
        if values:
            norms[task] = statistics.median(values)
    if len(norms) < 2:
        return dict.fromkeys(tasks, 1.0)
    centre = math.exp(statistics.fmean(math.log(n) for n in norms.values()))
    return {
        task: round(min(max(centre / norms[task], 1 / MAX_WEIGHT), MAX_WEIGHT), 3)
        if task in norms
        else 1.0
        for task in tasks
    }


def dwa_temperature(records: Sequence[Mapping[str, Any]], tasks: Sequence[str]) -> float:
    """DWA's temperature (Liu et al. 2019 use 2): weights go as exp(r_t / T) with r_t a task's
    loss ratio between successive epochs; T is set so that the spread of the probe's ratios
    (second half / first half of its losses) moves a weight by at most 2x, within [0.5, 2]."""
    half = len(records) // 2
    ratios = []
    for task in tasks:
        key = f"loss/{task}"
        first = _mean([float(r[key]) for r in records[:half] if key in r])
        second = _mean([float(r[key]) for r in records[half:] if key in r])
        if math.isfinite(first) and math.isfinite(second) and first > 0:
            ratios.append(second / first)
    if len(ratios) < 2:
        return 2.0
    return round(min(max((max(ratios) - min(ratios)) / math.log(2.0), 0.5), 2.0), 3)


def cagrad_c(pairs: Sequence[PairEvidence]) -> float:
    """CAGrad's radius c: 0.4 (the paper's setting for NYUv2 and Cityscapes) where half the steps
    conflict, in proportion to the most conflicting pair's share, within [0.1, 0.8]."""
    shares = [p.conflict_share for p in pairs if math.isfinite(p.conflict_share)]
    return round(min(max(0.8 * max(shares, default=0.5), 0.1), 0.8), 3)


def _sharing(pairs: Sequence[PairEvidence]) -> tuple[list[tuple[str, str]], str, list[str]]:
    """Pairs to train apart, the sharing design and why (the affinity rules above)."""
    apart = [(p.a, p.b) for p in pairs if p.affinity_ab < HARM and p.affinity_ba < HARM]
    harmed = [p for p in pairs if min(p.affinity_ab, p.affinity_ba) < HARM]
    measured = [p for p in pairs if math.isfinite(p.affinity_ab) or math.isfinite(p.affinity_ba)]
    if apart:
        names = ", ".join(f"{a}+{b}" for a, b in apart)
        return apart, "hard", [f"{names}: each one's step raises the other's loss: train apart"]
    if harmed:
        names = ", ".join(f"{p.a}|{p.b}" for p in harmed)
        why = f"{names}: one task's step harms the other (affinity < {HARM}) but not both ways"
        return [], "cross_stitch", [f"{why}: cross-stitch lets each task learn how much to share"]
    if not measured:
        return [], "hard", ["no affinity measured (no batch labelled two tasks): hard sharing"]
    return [], "hard", [f"no task's step harms another's loss (affinity >= {HARM}): one trunk"]


def recommend(
    records: Sequence[Mapping[str, Any]],
    tasks: Sequence[str],
    costs: Mapping[str, Cost] | None = None,
) -> Advice:
    """The advice from the probe's step ``records`` over ``tasks`` and the measured ``costs``
    (candidate name ``method/sharing`` -> :class:`Cost`)."""
    kept = settled(records)
    pairs = pair_evidence(kept, tasks)
    apart, sharing, reasons = _sharing(pairs)
    tuned = {
        "mtl.weights": norm_weights(kept, tasks),
        "mtl.dwa_temperature": dwa_temperature(kept, tasks),
        "mtl.cagrad_c": cagrad_c(pairs),
    }
    counted = [p for p in pairs if p.samples >= MIN_SAMPLES]
    if len(counted) < len(pairs):
        few = ", ".join(f"{p.a}|{p.b} ({p.samples})" for p in pairs if p not in counted)
        reasons.append(f"too few measurements (< {MIN_SAMPLES}) to judge {few}: a longer probe")
    conflicting = [
        p for p in counted if p.conflict_share >= CONFLICT_SHARE and p.cos_mean < CONFLICT_MEAN_COS
    ]
    unbalanced = [p for p in counted if p.norm_ratio >= NORM_RATIO]
    settings: dict[str, Any] = {"mtl.sharing": sharing}
    if conflicting:
        method = "cagrad"
        settings["mtl.cagrad_c"] = tuned["mtl.cagrad_c"]
        names = ", ".join(f"{p.a}|{p.b} (cos {p.cos_mean:+.2f})" for p in conflicting)
        reasons.append(f"gradients conflict in most steps for {names}: gradient surgery")
    elif unbalanced:
        method = "fixed"
        names = ", ".join(f"{p.a}|{p.b} ({p.norm_ratio:.0f}x)" for p in unbalanced)
        reasons.append(
            f"no pair conflicts: equal fixed weights; gradient norms differ by >= "
            f"{NORM_RATIO:.0f}x for {names}, but weights that even them out lost to equal "
            "weights on both reports of docs/advisor.md (a head that reaches the shared layers "
            "through a few RoIs has a small norm there by design): try mtl.weights below only "
            "as an experiment"
        )
    else:
        method = "fixed"
        reasons.append(
            f"no pair conflicts and gradient norms are within {NORM_RATIO:.0f}x: equal fixed "
            "weights (balancing has nothing to correct; the cheapest step)"
        )
    settings = {"mtl.method": method, **settings}
    return Advice(
        share=not apart,
        apart=apart,
        sharing=sharing,
        method=method,
        settings=settings,
        tuned=tuned,
        reasons=reasons,
        pairs=pairs,
        costs=dict(costs or {}),
    )


def _num(value: float, spec: str) -> str:
    return format(value, spec) if math.isfinite(value) else "n/a"


def format_advice(advice: Advice) -> str:
    """The evidence and cost tables and the recommendation, as printed by ``visionmtl advise``."""
    lines = [
        "| pair | grad cos (mean) | steps cos < 0 | norm ratio | affinity a>b | affinity b>a | steps |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for p in advice.pairs:
        lines.append(
            f"| {p.a}\\|{p.b} | {_num(p.cos_mean, '+.3f')} | {_num(p.conflict_share, '.0%')} "
            f"| {_num(p.norm_ratio, '.1f')} | {_num(p.affinity_ab, '+.3f')} "
            f"| {_num(p.affinity_ba, '+.3f')} | {p.samples} |"
        )
    if advice.costs:
        fixed = advice.costs.get("fixed/hard")
        lines += ["", "| candidate | params (M) | step s | x fixed | peak MB | full run (est.) |"]
        lines.append("|---|---:|---:|---:|---:|---:|")
        for name, cost in advice.costs.items():
            ratio = cost.step_s / fixed.step_s if fixed and fixed.step_s > 0 else math.nan
            peak = "n/a (CPU)" if cost.peak_mb is None else f"{cost.peak_mb:.0f}"
            lines.append(
                f"| {name} | {cost.params / 1e6:.2f} | {cost.step_s:.3f} | {_num(ratio, '.2f')} "
                f"| {peak} | {_duration(cost.full_run_s)} |"
            )
    verdict = "share one network" if advice.share else f"train apart: {advice.apart}"
    overrides = " ".join(f"{key}={_override(value)}" for key, value in advice.settings.items())
    lines += [
        "",
        f"recommendation: {verdict}; {advice.method}/{advice.sharing}",
        f"  --set {overrides}",
    ]
    lines += [f"  because {reason}" for reason in advice.reasons]
    tuned = ", ".join(f"{key}={_override(value)}" for key, value in advice.tuned.items())
    lines.append(f"  each method's setting from the probe: {tuned}")
    return "\n".join(lines)


def _override(value: Any) -> str:
    if isinstance(value, Mapping):
        return "{" + ",".join(f"{k}:{v}" for k, v in value.items()) + "}"
    return str(value)


def _duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "n/a"
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.0f} min"
