"""The catalogue of training recipes (``METHODS``), each with a ``+DSB`` form, and how methods pair with their DSB form.

    methods.METHODS["LDAM-DRW+DSB"]          # {"loss": "ldam", "reweight": "drw", "dsb": True}
    methods.with_dsb(["CE", "LDAM-DRW"])      # {"CE": ..., "CE+DSB": ..., "LDAM-DRW": ..., "LDAM-DRW+DSB": ...}
    methods.dsb_pairs(names)                  # [("CE", "CE+DSB"), ...] for the pairs present

A recipe is the set of config fields it sets over a base config; each cites its source's file and line. An unknown
name is an error that lists the close ones.
"""

from __future__ import annotations

import difflib
from typing import Any, Iterable

DSB_SUFFIX = "+DSB"


class UnknownMethod(KeyError):
    """A method name the catalogue does not have; the message names the close ones."""

    def __str__(self) -> str:
        return str(self.args[0])


class Catalogue(dict):
    """A dict of recipes whose missing names raise :class:`UnknownMethod` with suggestions."""

    def __missing__(self, name):
        close = difflib.get_close_matches(str(name), list(self), n=3, cutoff=0.6)
        hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        raise UnknownMethod(f"unknown method {name!r}{hint} Known methods: {', '.join(self)}")


# Named recipes: the fields each method sets over the base config. The batch reduction is each source's own
# (PAPER.md §6): F.cross_entropy(weight=) is the weighted mean Σ aL / Σ a; a plain .mean() is Σ aL / N.
BASE_METHODS: dict[str, dict[str, Any]] = {
    "CE": {"loss": "ce"},
    # Lin et al. 2017 as in LDAM-DRW: FocalLoss(gamma=1) (kaidic/LDAM-DRW cifar_train.py line 215), averaged
    # over the batch by focal_loss's loss.mean() (losses.py line 11)
    "Focal": {"loss": "focal", "focal_gamma": 1.0, "reduction": "mean"},
    # Cui et al. 2019: class-balanced weights (1-β)/(1-β^n), β = 0.9999, γ = 1 (richardaecn/class-balanced-loss
    # cifar_im_trainval_cb.sh; src/cifar_main.py lines 428-429), loss summed and divided by N (lines 263-265).
    # Cui et al.'s focal loss is sigmoid-based; ours is the softmax form.
    "CB-Focal": {"loss": "focal", "focal_gamma": 1.0, "reweight": "cb", "cb_beta": 0.9999, "reduction": "mean"},
    # LDAM-DRW's deferred re-weighting: β = 0 until epoch 160 of 200, then 0.9999 (cifar_train.py lines 199-206),
    # in nn.CrossEntropyLoss(weight=) (line 211): the weighted mean
    "CE-DRW": {"loss": "ce", "reweight": "drw"},
    "LDAM": {"loss": "ldam"},  # LDAMLoss(max_m=0.5, s=30) on the cosine classifier (lines 106, 213)
    "LDAM-DRW": {"loss": "ldam", "reweight": "drw"},
    "Balanced Softmax": {"loss": "balanced-softmax"},  # Ren et al. 2020: CE(z + log π)
    "Logit-adjusted": {"loss": "logit-adjusted", "logit_tau": 1.0},  # Menon et al. 2021, τ = 1
    # Sinha et al. 2020 with CDB's CIFAR-LT script: τ 'dynamic' of losses/cdb_loss.py lines 25-27 (our
    # 'dynamic-v1'), difficulty from a 25-per-class held-out split (cifar_train.py lines 157-160), loss
    # averaged over the batch (line 76)
    "CDB-CE": {"loss": "ce", "reweight": "cdb", "cdb_tau": "dynamic-v1", "reduction": "mean"},
}
# The other imbalance methods of the study's sources (issue 11). Each has a +DSB form below: DSB weights the loss
# of the (first-stage) training, and its weights multiply the sampler's draws, GLA/GCA's class weights and MWN's
# sample weights. The second stages themselves (cRT, LWS: plain CE on class-balanced draws; post-hoc LA, τ-norm: no
# training) take no DSB weights: "cRT+DSB" is cRT on a CE+DSB first stage.
OTHER_METHODS: dict[str, dict[str, Any]] = {
    # Buda et al. 2018 (the paper's Sec 1 argues against it): p(sample) ∝ 1/n_c, N draws with replacement per epoch;
    # square-root sampling (Mahajan et al. 2018, Kang et al. 2020 "feat_squareroot"): p(class) ∝ √n_c
    "CB sampling": {"loss": "ce", "sampler": "class-balanced"},
    "Sqrt sampling": {"loss": "ce", "sampler": "sqrt"},
    # Menon et al. 2021: logits − τ log π on the finished CE run, τ = 1 (logit_adjustment/main.py flag tau=1.0), or
    # τ chosen on the held-out split
    "Post-hoc LA": {"loss": "ce", "second_stage": "posthoc-la"},
    "Post-hoc LA (τ held-out)": {"loss": "ce", "second_stage": "posthoc-la", "stage2_tau": "heldout"},
    # Kang et al. 2020 (facebookresearch/classifier-balancing): second stages on the CE run (semscale.second_stage)
    "cRT": {"loss": "ce", "second_stage": "crt", "stage2_steps": "reference"},
    "τ-norm": {"loss": "ce", "second_stage": "tau-norm"},
    "LWS": {"loss": "ce", "second_stage": "lws", "stage2_steps": "reference"},
    # Cortes, Mohri & Zhong 2025, forms derived from the abstract (losses.py): q = 0.5, τ = 1, margin 0.5
    "GLA": {"loss": "gla"},
    "GCA": {"loss": "gca"},
    # Shu et al. 2019 (semscale.metaweight): CE, weights from V(loss), meta set of 10 unused images per class
    "MWN": {"loss": "ce", "mwn": True},
}
# DSB multiplies whatever weights the method already has (PAPER.md §6): LDAM-DRW+DSB has both; LDAM+DSB is the
# paper's own form, the per-sample loss divided by S_y.
METHODS = Catalogue({
    **BASE_METHODS,
    **{f"{name}{DSB_SUFFIX}": {**fields, "dsb": True} for name, fields in BASE_METHODS.items()},
    **OTHER_METHODS,
    **{f"{name}{DSB_SUFFIX}": {**fields, "dsb": True} for name, fields in OTHER_METHODS.items()},
})


def with_dsb(names: Iterable[str], catalogue: dict | None = None) -> dict[str, dict]:
    """``{X: fields, X+DSB: fields}`` for each name (a name already ending in +DSB is taken as is)."""
    catalogue = METHODS if catalogue is None else Catalogue(catalogue)
    out = {}
    for name in names:
        for n in ([name] if name.endswith(DSB_SUFFIX) else [name, name + DSB_SUFFIX]):
            out[n] = dict(catalogue[n])
    return out


def base_method(name: str) -> str:
    """The method without DSB: ``X`` for ``X+DSB``, the name itself otherwise."""
    return name[: -len(DSB_SUFFIX)] if name.endswith(DSB_SUFFIX) else name


def dsb_pairs(names: Iterable[str]) -> list[tuple[str, str]]:
    """(X, X+DSB) for every method X whose +DSB partner is among ``names``, in order of first appearance."""
    names = list(dict.fromkeys(names))
    return [(n, n + DSB_SUFFIX) for n in names if not n.endswith(DSB_SUFFIX) and n + DSB_SUFFIX in names]
