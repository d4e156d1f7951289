"""Every published number the study compares with (PAPER.md §4–5), in one place.

* :data:`PUBLISHED`: top-1 (%) of the long-tailed baselines on the *official* CIFAR-LT sets (peers' numbers under
  LDAM-DRW's protocol, best epoch) and the paper's own Fig. 18; :data:`STAND_IN` says which of our dataset variants
  stands beside which benchmark (only the ordering of methods is comparable).
* :data:`PAPER_GAINS`: the paper's DSB gains in points.
* :data:`PAPER_TABLE1` and :data:`PAPER_COUNTERPART`: Table 1's Pearson correlations and our stand-ins for its data.
"""

from __future__ import annotations

import pandas as pd

# PAPER.md §5: published top-1 (%) on the *official* CIFAR-LT sets under LDAM-DRW's protocol (best epoch in the
# peers' code), and the paper's own DSB-CE / CDB-CE numbers of its Fig. 18 (CIFAR-100-LT, the paper's protocol).
_C10 = "CIFAR-10-LT (official CIFAR)"
_C100 = "CIFAR-100-LT (official CIFAR)"
_PEERS = "peers, LDAM-DRW protocol (PAPER.md §5)"
_FIG18 = "Ma et al. Fig. 18, own protocol (PAPER.md §4.3)"
PUBLISHED = pd.DataFrame(
    [(m, _C10, imb, v, _PEERS) for m, vals in {
        "CE": (70.4, 74.8, 86.4), "Focal": (70.4, 76.7, 86.7), "CB-Focal": (74.6, 79.3, 87.5),
        "LDAM-DRW": (77.0, None, 88.2), "Logit-adjusted": (77.9, None, None)}.items()
     for imb, v in zip((100, 50, 10), vals) if v is not None]
    + [(m, _C100, imb, v, _PEERS) for m, vals in {
        "CE": (38.3, 43.9, 55.7), "Focal": (38.4, 44.3, 55.8), "CB-Focal": (39.6, 45.3, 58.0),
        "LDAM-DRW": (42.0, None, 58.7), "CDB-CE": (42.6, None, 58.7), "Logit-adjusted": (44.1, None, None)}.items()
       for imb, v in zip((100, 50, 10), vals) if v is not None]
    + [("CE+DSB", _C100, imb, v, _FIG18) for imb, v in zip((200, 100, 50, 10), (41.2, 45.5, 49.4, 60.2))]
    + [("CDB-CE", _C100, imb, v, _FIG18) for imb, v in zip((200, 100, 50, 10), (37.4, 42.5, 46.7, 58.7))]
    # Meta-Weight-Net's own CIFAR-10-LT IF 100 number (Shu et al. 2019, Table 1, ResNet-32; quoted by issue 11)
    + [("MWN", _C10, 100, 75.21, "Shu et al. 2019, Table 1")],
    columns=["method", "published_benchmark", "imbalance", "published_top1_pct", "published_source"])
# which published benchmark stands beside which of our dataset variants (only the ordering is comparable)
STAND_IN = {"cifar10-jpeg75": _C10, "tiny-imagenet": _C100}
# the paper's own DSB gains (points of top-1), PAPER.md §4.3
PAPER_GAINS = pd.DataFrame([
    ("CE", "ImageNet-LT, ResNeXt-50", 4.8), ("Focal", "ImageNet-LT, ResNeXt-50", 3.4),
    ("LDAM", "ImageNet-LT, ResNeXt-50", 1.2), ("Balanced Softmax", "ImageNet-LT, ResNeXt-50", 1.6),
    ("CE", "iNaturalist 2018, ResNet-50", 2.6), ("CE", "balanced CIFAR-100 (Table 3), 8 networks", 1.2),
    ("CDB-CE", "CIFAR-100-LT IF 100 (Fig. 18: DSB-CE − CDB-CE)", 3.0),
], columns=["method", "paper_setting", "paper_gain_points"])


#: Table 1's measures, in its order: N, E_n, W, S′ and S at α = 1, 1.5, 2, 2.5, 3 (column names of study.bias).
TABLE1_MEASURES = ["N", "E_n", "W", "S_prime", "S_a1", "S_a1.5", "S_a2", "S_a2.5", "S_a3"]
#: Table 1 of the paper (PAPER.md §4.2): Pearson r between per-class accuracy and each measure.
PAPER_TABLE1 = pd.DataFrame(
    [["CIFAR-10-LT (IF 200)", "ResNet-18", .8346, .8664, .2957, .8688, .8456, .9603, .9553, .9398, .9269],
     ["CIFAR-10-LT (IF 200)", "ResNet-34", .7938, .8476, .3186, .9426, .7950, .9678, .9884, .9854, .9796],
     ["CIFAR-10", "ResNet-18", .0950, .0950, .1743, .5433, .7850, .7250, .6644, .6060, .5607],
     ["CIFAR-10", "ResNet-34", .1502, .1502, .2075, .5750, .8056, .7442, .6870, .6465, .5906]],
    columns=["data", "model", *TABLE1_MEASURES])
#: our stand-ins for the paper's datasets in Table 1
PAPER_COUNTERPART = {"cifar10-jpeg75-lt200": "CIFAR-10-LT (IF 200)", "cifar10-jpeg75": "CIFAR-10"}
