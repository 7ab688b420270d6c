"""Train a router on a loaded outcome table: the one path behind `audiorouter train` and
scripts/build_default_router.py.

Recipes (`RECIPES`, `available_recipes()`):

| recipe | what runs |
| --- | --- |
| `auto` (default) | head mode on frozen (cached) embeddings; the candidate set of textrouter.selection (category heads when the rows carry a category, else GRPO heads) is scored by 4-fold inner CV on the table and the best is refit on all rows; argmax routing, or with a budget / tool costs the decision rule (textrouter.decision) fitted on its out-of-fold probabilities |
| `paper` | the paper's recipe: LoRA r16 / alpha 32 / dropout 0.05 on query/value + head, lr 5e-5 (head 1e-3), beta 0.01, 1 epoch, `relative` reward, argmax routing |
| `head` | one fixed head-mode recipe (aligned reward, 10 epochs, head lr 1e-2), decision rule fitted by inner CV |

Flags that fix a value (`--reward`, `--epochs`, `--head-lr`, `--beta`) turn `auto` into one fixed
candidate (no selection; the decision rule is still fitted).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from .errors import RouterError
from .grpo import RewardConfig, StepCallback, TrainOptions, TrainResult

MIN_ROWS = 50  # below this a router is mostly noise: train anyway, but warn (measured: 5-fold CV folds of 10)


@dataclass(frozen=True)
class Recipe:
    name: str
    description: str
    mode: str
    reward: str
    epochs: int | None
    lr: float
    head_lr: float | None
    beta: float
    candidates: str | None   # textrouter.selection candidate set, None: train `options` once


RECIPES: dict[str, Recipe] = {
    "auto": Recipe("auto", "per-table selection by inner CV (category heads when rows carry a category, else GRPO heads)",
                   "head", "aligned", None, 5e-5, None, 0.01, "auto"),
    "paper": Recipe("paper", "the paper's recipe: LoRA r16/alpha32/dropout0.05, lr 5e-5, beta 0.01, 1 epoch, "
                    "relative reward, argmax", "lora", "relative", 1, 5e-5, 1e-3, 0.01, None),
    "head": Recipe("head", "one fixed head-mode recipe (aligned, 10 epochs, head lr 1e-2) + fitted decision rule",
                   "head", "aligned", 10, 5e-5, 1e-2, 0.01, "single"),
}


def available_recipes() -> list[str]:
    return list(RECIPES)


def get_recipe(name: str) -> Recipe:
    if name not in RECIPES:
        raise ValueError(f"recipe {name!r} unknown; valid: {', '.join(RECIPES)}")
    return RECIPES[name]


@dataclass(frozen=True)
class Plan:
    """What `fit_router` runs: base options + candidate set (None: train `options` once, argmax)."""

    recipe: str
    options: TrainOptions
    candidates: tuple | None
    costs: Mapping[str, float] | None = None
    max_tool_rate: float = 1.0
    categories: bool = True            # let the selection use the table's category column, if any
    category_field: str | None = None  # force that metadata key (textrouter.category.CATEGORY_FIELDS)
    fit_margin: bool | None = None     # None: fit the decision margin only with a budget or costs


def plan(recipe: str = "auto", *, mode: str | None = None, encoder: str = "minilm", reward: str | None = None,
         epochs: int | None = None, lr: float | None = None, head_lr: float | None = None,
         beta: float | None = None, group: str = "exhaustive", group_size: int = 8,
         batch_size: int | None = None, max_length: int = 128, seed: int = 0,
         costs: Mapping[str, float] | None = None, max_tool_rate: float | None = None,
         categories: bool = True, category_field: str | None = None, fit_margin: bool | None = None) -> Plan:
    """Resolve CLI-level choices into a Plan (ValueError one-liners naming valid choices)."""
    from .decision import check_rate
    from .encoders import get_encoder
    from .selection import Candidate, get_candidates

    from .grpo import MODES

    r = get_recipe(recipe)
    spec = get_encoder(encoder)
    if mode is not None and mode not in MODES:
        raise ValueError(f"mode {mode!r} unknown; valid: {', '.join(MODES)}")
    if mode is not None and mode != r.mode:
        if recipe != "auto" or mode != "lora":
            raise ValueError(f"--mode {mode} contradicts --recipe {recipe} (mode {r.mode}); drop one of them")
        r = RECIPES["paper"]  # `--mode lora` alone: the paper's LoRA recipe
    if r.mode not in spec.modes:
        raise ValueError(f"encoder {encoder} trains in mode {', '.join(spec.modes)} only (recipe {r.name} needs "
                         f"{r.mode}); use --recipe auto or --encoder minilm")
    opts = TrainOptions(mode=r.mode, epochs=epochs if epochs is not None else r.epochs,
                        lr=lr if lr is not None else r.lr,
                        head_lr=head_lr if head_lr is not None else r.head_lr,
                        beta=beta if beta is not None else r.beta, group=group, group_size=group_size,
                        batch_size=batch_size, max_length=max_length, seed=seed,
                        reward=RewardConfig(kind=reward or r.reward), encoder=encoder)
    rate = 1.0 if max_tool_rate is None else check_rate(max_tool_rate)
    if category_field is not None and not categories:
        raise ValueError("--category-field contradicts --no-categories; drop one of them")
    if r.candidates is None:
        if category_field is not None:
            raise ValueError(f"--category-field needs the recipe's selection: use --recipe auto (recipe {r.name} "
                             "trains one GRPO recipe)")
        if fit_margin:
            raise ValueError(f"--fit-margin needs a fitted decision rule: use --recipe auto or head (recipe {r.name} "
                             "routes by argmax)")
        if costs and any(c != 1.0 for c in costs.values()) or max_tool_rate is not None:
            raise ValueError(f"--max-tool-rate/--tool-cost need a fitted decision rule: use --recipe auto or head "
                             f"(recipe {r.name} routes by argmax)")
        return Plan(r.name, opts, None)
    if r.name == "auto" and any(v is not None for v in (reward, epochs, head_lr, beta)):
        cands = (Candidate("flags", opts.reward.kind, opts.n_epochs, opts.n_head_lr, opts.beta, 1),)
        name = "auto (fixed by flags)"
    else:
        cands = get_candidates(r.candidates)
        name = r.name
    return Plan(name, opts, cands, dict(costs or {}), rate, categories, category_field, fit_margin)


def size_warnings(n_rows: int, k: int | None = None) -> list[str]:
    """One-line warnings for tables too small for a meaningful router / for K-fold CV."""
    out = []
    if n_rows < MIN_ROWS:
        out.append(f"warning: the table has {n_rows} rows; a router trained on fewer than {MIN_ROWS} questions "
                   f"mostly learns noise (collect more with `audiorouter collect`)")
    if k is not None and n_rows // max(k, 1) < 10:
        out.append(f"warning: {k}-fold CV on {n_rows} rows leaves ~{n_rows // max(k, 1)} questions per fold; "
                   f"accuracies per fold and task are noise (use fewer folds or a bigger table)")
    return out


def fit_router(table, mapping, opts_or_plan, table_name: str, on_step: StepCallback | None = None,
               on_stage=None) -> tuple[Any, TrainResult, dict]:
    """Train a router: (policy, TrainResult, checkpoint meta).

    `opts_or_plan`: a Plan (from `plan`) or bare TrainOptions (trained once, argmax routing).
    `meta` is what `model.save_checkpoint` and `export.export_policy` store; with a candidate set it
    holds `selection` (candidates, inner-CV scores, the choice) and `decision` (the fitted rule).
    """
    import numpy as np

    from .embed_cache import encode
    from .encoders import get_encoder
    from .grpo import head_probs, policy_probs, train_head, train_lora
    from .head import is_mixture
    from .model import ENCODER_ID
    from .table import outcome_matrix, texts

    p = opts_or_plan if isinstance(opts_or_plan, Plan) else Plan("options", opts_or_plan, None)
    opts = p.options
    mapping.validate(table)
    xs = texts(table)
    o = outcome_matrix(table, mapping)
    n = len(o)
    if n == 0:
        raise RouterError("no training rows (the table is empty); give a table with rows")
    _, _, truncated = encode(xs, opts.max_length)
    t0 = time.perf_counter()
    selection = decision = None
    head_doc: dict[str, Any] = {"kind": "linear"}   # textrouter.head's form of the trained head
    if opts.mode == "head":
        spec = get_encoder(opts.encoder)
        if on_stage:
            on_stage("embedding the questions (cached after the first run)")
        x = spec.features(xs, opts.max_length)
        if p.candidates is not None:
            from .category import category_codes
            from .selection import fit_ensemble, select, usable

            found = category_codes(table, p.category_field) if p.categories else None
            cats, n_cats = (found[0], len(found[1])) if found else (None, None)
            cands = usable(p.candidates, cats)
            if on_stage:
                on_stage(f"selecting among {len(cands)} candidate recipe(s) by inner CV"
                         + (f" (categories: {n_cats} values of {found[2]!r})" if found else ""))
            sel = select(x, o, mapping.actions, opts, cands, seed=opts.seed, costs=p.costs,
                         max_tool_rate=p.max_tool_rate, cats=cats, n_cats=n_cats, fit_margin=p.fit_margin)
            t_fit = time.perf_counter()
            head = fit_ensemble(x, o, sel.candidate, opts, opts.seed, cats, n_cats)
            if sel.candidate.kind == "category":  # no GRPO run: no reward curve; the time is the head fit
                res = TrainResult(None, head, [], time.perf_counter() - t_fit, opts)
            else:
                # the curve of the chosen recipe's last ensemble member, for reward_curve.png
                res = train_head(x, o, sel.candidate.options(opts, opts.seed), on_step)
                res = TrainResult(None, head, res.curve, res.elapsed_s, sel.candidate.options(opts, opts.seed))
            selection = {**sel.report, "recipe": p.recipe, "candidates": [c.to_dict() for c in cands],
                         "chosen": sel.candidate.to_dict(),
                         "category_field": found[2] if found else None,
                         "categories": n_cats or 0}
            decision = sel.rule
            if is_mixture(head):  # a category candidate: found holds the field and names
                # the mixture's components, in its order (textrouter.head: logit c of the classifier)
                head_doc = {"kind": "mixture", "category_field": found[2],
                            "categories": [found[1][c] for c in np.unique(cats)]}
        else:
            res = train_head(x, o, opts, on_step)
        probs = head_probs(x, res.head)
        policy = spec.policy_from_head(mapping.actions, res.head, seed=opts.seed)
    else:
        res = train_lora(xs, o, mapping.actions, opts, on_step)
        policy = res.policy
        probs = policy_probs(policy, xs, opts.max_length)
    wall = time.perf_counter() - t0
    chosen = probs.argmax(1) if decision is None else decision.choose(probs)
    trained = res.options
    metrics = {
        "train_routed_accuracy": float(o[np.arange(n), chosen].mean()),   # in-sample
        "train_always_direct": float(o[:, 0].mean()),
        "train_oracle": float(o.max(1).mean()),
        "train_tool_call_rate": float((chosen != 0).mean()),
        "final_mean_reward": (float(np.mean([c["reward"] for c in res.curve[-max(1, len(res.curve) // 10):]]))
                              if res.curve else None),  # None: the chosen candidate ran no GRPO
        "steps": len(res.curve),
        "train_seconds": round(res.elapsed_s, 3),
        "wall_seconds": round(wall, 3),
        "truncated_questions": int(truncated.sum()),
    }
    if selection is not None and selection.get("cv_accuracy") is not None:
        metrics["cv_accuracy"] = selection["cv_accuracy"]
        metrics["cv_tool_call_rate"] = selection["cv_tool_call_rate"]
    meta = {
        "actions": mapping.actions,
        "direct_action": "direct",
        "column_mapping": mapping.to_dict(),
        "encoder": ENCODER_ID,
        "engine": opts.encoder,
        "max_length": opts.max_length,
        "reward": {"kind": trained.reward.kind,
                   **{k: v for k, v in trained.reward.__dict__.items() if k != "kind"}},
        "table": {"sha256": table.sha256, "name": table_name, "n_rows": n},
        "seed": opts.seed, "mode": opts.mode, "group": opts.group, "epochs": trained.n_epochs,
        "recipe": p.recipe,
        "options": trained.to_dict(),
        "metrics": metrics,
    }
    meta["head"] = head_doc
    if selection is not None:
        meta["selection"] = selection
    if decision is not None:
        meta["decision"] = decision.to_dict()
    return policy, res, meta


def decision_of(meta: Mapping[str, Any]):
    """The DecisionRule stored in a checkpoint/router meta, or the argmax rule."""
    from .decision import DecisionRule, argmax_rule

    doc = meta.get("decision")
    return argmax_rule(meta["actions"]) if doc is None else DecisionRule.from_dict(doc, meta["actions"])


def route_probs_with(meta: Mapping[str, Any], probs, margin: float | None = None,
                     max_tool_rate: float | None = None) -> Sequence[int]:
    """Action indices of probabilities under the meta's rule (overrides as in Router.route)."""
    return decision_of(meta).choose(probs, margin=margin, max_tool_rate=max_tool_rate)
