"""The decision rule and tool budget: call a tool only when its estimated gain over `direct` clears a margin.

Torch-free (numpy only): the runtime applies it to the ONNX router's probabilities; training fits it.

For a question with router probabilities p [A] (action 0 = direct) and each tool t:

    gain_t = p_t - p_direct            the policy's estimated gain of t over direct (probability units)
    net_t  = gain_t - margin * cost_t
    route to argmax_t net_t if that net_t > 0, else direct

With margin 0 this is exactly the argmax of p. A positive margin makes the router call tools only
when the policy prefers them clearly; a negative one makes it call more eagerly. `cost_t`
(relative units, default 1; `--tool-cost asr=2.0`) makes an expensive tool clear a proportionally
higher bar, and it weights the budget: the *tool rate* of a choice is the mean cost of the calls
per question (the plain tool-call rate when every cost is 1).

Fitting (`fit_rule`, used by `audiorouter train`): on out-of-fold probabilities of the training table
(inner cross-validation, so they are honest about new questions) the margin with the best routed
accuracy among those whose tool rate is <= `max_tool_rate` is kept, from the coarse MARGIN_GRID
(ties: the larger margin, fewer calls). Choosing among every breakpoint of the out-of-fold curve
instead overfits the few hundred inner rows (measured under nested CV, bench/bench_routing.py).
The whole out-of-fold curve (margin, tool rate, accuracy) is stored, so a route-time
`max_tool_rate` becomes a margin without the training table.

router.json / meta.json field `decision` (DecisionRule.to_dict):
    {"rule": "gain-margin-v1", "margin": float, "max_tool_rate": float, "costs": {tool: float},
     "curve": [[margin, tool_rate, accuracy], ...], "fit": {"n": rows, "source": ..., ...}}
A folder without `decision` routes by argmax (margin 0).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

RULE = "gain-margin-v1"
MARGIN_RANGE = (-1.0, 1.0)  # probability units: p_tool - p_direct lies in [-1, 1]
MARGIN_GRID = (-0.2, -0.1, -0.05, 0.0, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0)


def _finite(value: Any, what: str) -> float:
    if isinstance(value, bool):
        raise ValueError(f"{what} must be a number (got {value!r})")
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be a number (got {value!r})") from None
    if not math.isfinite(v):
        raise ValueError(f"{what} must be finite (got {value!r})")
    return v


def check_margin(margin: Any) -> float:
    v = _finite(margin, "margin")
    if not MARGIN_RANGE[0] <= v <= MARGIN_RANGE[1]:
        raise ValueError(f"margin {v:g} out of range; give a value in [{MARGIN_RANGE[0]:g}, {MARGIN_RANGE[1]:g}] "
                         "(0.1 = a tool's probability must beat direct's by 0.1)")
    return v


def check_rate(rate: Any) -> float:
    v = _finite(rate, "max_tool_rate")
    if not 0.0 <= v <= 1.0:
        raise ValueError(f"max_tool_rate {v:g} out of range; give a fraction in [0, 1] (0.3 = at most 30% tool calls)")
    return v


def parse_costs(specs: Sequence[str], tools: Sequence[str]) -> dict[str, float]:
    """`["asr=2.0", ...]` -> {tool: cost}; every tool not named costs 1.0. ValueError names the fix."""
    costs = {t: 1.0 for t in tools}
    seen: set[str] = set()
    for spec in specs:
        name, sep, value = str(spec).partition("=")
        name = name.strip()
        if not sep or not name:
            raise ValueError(f"--tool-cost {spec!r} must look like TOOL=COST, e.g. --tool-cost asr=2.0")
        if name not in costs:
            raise ValueError(f"--tool-cost {name!r} is not a tool action; valid: {', '.join(tools)}")
        if name in seen:
            raise ValueError(f"--tool-cost {name!r} given twice; give each tool's cost once")
        seen.add(name)
        c = _finite(value.strip(), f"--tool-cost {name}")
        if c <= 0:
            raise ValueError(f"--tool-cost {name}={value} must be > 0 (relative units, 1 = default)")
        costs[name] = c
    return costs


@dataclass(frozen=True)
class DecisionRule:
    """See the module docstring."""

    tools: tuple[str, ...]
    margin: float = 0.0
    costs: Mapping[str, float] = field(default_factory=dict)
    max_tool_rate: float = 1.0
    curve: tuple[tuple[float, float, float], ...] = ()
    fit: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "tools", tuple(self.tools))
        object.__setattr__(self, "margin", check_margin(self.margin))
        object.__setattr__(self, "max_tool_rate", check_rate(self.max_tool_rate))
        unknown = [t for t in self.costs if t not in self.tools]
        if unknown:
            raise ValueError(f"cost given for {', '.join(unknown)}, not a tool; valid: {', '.join(self.tools)}")
        costs = {t: _finite(self.costs.get(t, 1.0), f"cost of {t}") for t in self.tools}
        bad = [t for t, c in costs.items() if c <= 0]
        if bad:
            raise ValueError(f"tool cost of {', '.join(bad)} must be > 0 (relative units, 1 = default)")
        object.__setattr__(self, "costs", costs)

    def _cost_vector(self):
        import numpy as np

        return np.array([self.costs[t] for t in self.tools], dtype=np.float64)

    def gains(self, probs):
        """Estimated gain of each tool over direct, [N, A-1]: p_tool - p_direct."""
        import numpy as np

        p = np.asarray(probs, dtype=np.float64)
        return p[:, 1:] - p[:, :1]

    def resolve_margin(self, margin: float | None = None, max_tool_rate: float | None = None) -> float:
        """The margin to apply: an explicit `margin`, else the fitted curve's margin for
        `max_tool_rate`, else the stored one (both given: the stricter of the two)."""
        m = self.margin if margin is None else check_margin(margin)
        if max_tool_rate is not None:
            m = max(m, self.margin_for_rate(max_tool_rate)) if margin is not None else self.margin_for_rate(max_tool_rate)
        return m

    def choose(self, probs, margin: float | None = None, max_tool_rate: float | None = None):
        """Action indices [N] (0 = direct)."""
        import numpy as np

        p = np.asarray(probs, dtype=np.float64)
        if p.ndim != 2 or p.shape[1] != len(self.tools) + 1:
            raise ValueError(f"probabilities must be [N, {len(self.tools) + 1}] (got shape {p.shape})")
        m = self.resolve_margin(margin, max_tool_rate)
        net = self.gains(p) - m * self._cost_vector()
        best = net.argmax(1)
        return np.where(net[np.arange(len(p)), best] > 0, best + 1, 0)

    def tool_rate(self, chosen) -> float:
        """Mean call cost per question of a choice [N] (= the tool-call rate when costs are 1)."""
        import numpy as np

        c = np.concatenate([[0.0], self._cost_vector()])
        ch = np.asarray(chosen, dtype=np.int64)
        return float(c[ch].mean()) if len(ch) else 0.0

    def margin_for_rate(self, max_tool_rate: float) -> float:
        """The smallest margin on the fitted curve whose tool rate is <= max_tool_rate."""
        r = check_rate(max_tool_rate)
        if not self.curve:
            raise ValueError("this router stores no fitted margin curve (trained before decision rules or with "
                             "--recipe paper); pass a margin instead of max_tool_rate, or retrain")
        ok = [m for m, rate, _ in self.curve if rate <= r + 1e-12]
        return min(ok) if ok else MARGIN_RANGE[1]

    def to_dict(self) -> dict[str, Any]:
        return {"rule": RULE, "margin": self.margin, "max_tool_rate": self.max_tool_rate,
                "costs": dict(self.costs), "curve": [list(c) for c in self.curve], "fit": dict(self.fit)}

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any], actions: Sequence[str]) -> "DecisionRule":
        """From router.json's `decision`; ValueError (one line) when malformed."""
        if not isinstance(doc, Mapping):
            raise ValueError(f"decision must be an object (got {type(doc).__name__})")
        if doc.get("rule") != RULE:
            raise ValueError(f"decision rule {doc.get('rule')!r} unknown; this audiorouter reads {RULE!r}")
        tools = list(actions)[1:]
        costs = doc.get("costs") or {}
        if not isinstance(costs, Mapping):
            raise ValueError(f"decision costs must map tool -> number (got {costs!r})")
        curve = []
        raw = doc.get("curve") or []
        if not isinstance(raw, list):
            raise ValueError("decision curve must be a list of [margin, tool_rate, accuracy]")
        for pt in raw:
            if not isinstance(pt, (list, tuple)) or len(pt) != 3:
                raise ValueError(f"decision curve points must be [margin, tool_rate, accuracy] (got {pt!r})")
            curve.append(tuple(_finite(v, "decision curve value") for v in pt))
        fit = doc.get("fit") or {}
        return cls(tools=tuple(tools), margin=doc.get("margin", 0.0), costs=dict(costs),
                   max_tool_rate=doc.get("max_tool_rate", 1.0), curve=tuple(curve),
                   fit=dict(fit) if isinstance(fit, Mapping) else {})


def argmax_rule(actions: Sequence[str]) -> DecisionRule:
    """The rule of a folder without `decision`: margin 0, i.e. the argmax of the probabilities."""
    return DecisionRule(tools=tuple(actions)[1:], margin=0.0)


def margin_curve(rule: DecisionRule, probs, outcomes, points: int = 41):
    """[(margin, tool_rate, accuracy)] of `rule` on a table over the margin range, sorted by margin.
    Margins: the grid, the breakpoints where a question changes action (thinned), the range ends."""
    import numpy as np

    p = np.asarray(probs, dtype=np.float64)
    o = np.asarray(outcomes)
    n = len(o)
    brk = (rule.gains(p) / rule._cost_vector()).ravel() - 1e-9  # net_t crosses 0 at gain_t / cost_t
    brk = np.clip(brk, *MARGIN_RANGE)
    if len(brk) > points:
        brk = np.quantile(brk, np.linspace(0, 1, points))
    cand = np.unique(np.round(np.concatenate([brk, MARGIN_GRID, MARGIN_RANGE]), 6))
    out = []
    for m in cand:
        ch = rule.choose(p, margin=float(m))
        out.append((float(m), rule.tool_rate(ch), float(o[np.arange(n), ch].mean()) if n else float("nan")))
    return out


def fit_rule(oof_probs, outcomes, actions: Sequence[str], costs: Mapping[str, float] | None = None,
             max_tool_rate: float = 1.0, source: str = "inner cross-validation",
             grid: Sequence[float] | None = MARGIN_GRID) -> DecisionRule:
    """The margin from out-of-fold probabilities of the training table (see the module docstring).
    grid None: choose among every point of the curve."""
    import numpy as np

    tools = tuple(actions)[1:]
    rate = check_rate(max_tool_rate)
    rule = DecisionRule(tools=tools, margin=0.0, costs=dict(costs or {}), max_tool_rate=rate)
    p, o = np.asarray(oof_probs, dtype=np.float64), np.asarray(outcomes)
    curve = margin_curve(rule, p, o)
    choices = curve if grid is None else [
        (float(m), rule.tool_rate(ch), float(o[np.arange(len(o)), ch].mean()))
        for m in grid for ch in [rule.choose(p, margin=float(m))]]
    ok = ([pt for pt in choices if pt[1] <= rate + 1e-12]
          or [pt for pt in curve if pt[1] <= rate + 1e-12] or [max(curve, key=lambda pt: pt[0])])
    best = max(ok, key=lambda pt: (round(pt[2], 9), pt[0]))  # best accuracy; ties: larger margin
    return DecisionRule(tools=tools, margin=best[0], costs=rule.costs, max_tool_rate=rate, curve=tuple(curve),
                        fit={"n": int(len(o)), "source": source, "accuracy": best[2], "tool_rate": best[1]})
