"""Second stages on a finished run: post-hoc logit adjustment (Menon et al. 2021) and decoupling (Kang et al. 2020).

A config with ``second_stage`` set is two runs: its first stage is the same config without the second stage
(``config.first_stage``), trained into the sibling folder its own config names (``cache.run_name``; see
:func:`semscale.cli.train_run`), so a plain CE run (or CE+DSB, MWN, ...) is trained once and shared by every second
stage on it and by the plain method itself; the second stage reads the first stage's ``model.pt`` and writes the
same record files as any run (run.json with final metrics and provenance, epochs.csv, per_class.csv,
pool_history.csv, model.pt), so ``results.collect`` treats it like any run. Every second stage ends in a plain linear classifier, folded into ``model.pt``
(``features.extract`` works on it): ``logits = f·Wᵀ + b`` with

* ``posthoc-la`` (Menon et al. 2021): ``b − τ log π`` (google-research/google-research logit_adjustment/main.py,
  the post-hoc branch of the test loop: ``logits − log(base_probs**tau + 1e-12)``; ``--tau`` defaults to 1.0).
  ``stage2_tau``: a number (default 1, Menon's default) or ``heldout``. Their ``+ 1e-12`` guard is left out:
  every class of a subset has images, so log π is finite.
* ``tau-norm`` (Kang et al. 2020): ``W_c / ‖W_c‖^τ`` and no bias (facebookresearch/classifier-balancing
  tau_norm.py: ``pnorm`` lines 102-107; the logits are ``dotproduct_similarity`` without the bias, line 96).
  ``stage2_tau`` defaults to ``heldout``.
* ``lws`` (learnable weight scaling): ``s_c·(f·W_cᵀ + b_c)`` with W, b frozen and ``s`` (init 1) learned
  (models/TauNormClassifier.py lines 21-28), 5 epochs (config/ImageNet_LT/cls_lws.yaml ``num_epochs: 5``).
* ``crt`` (classifier re-training): a freshly initialised linear classifier (the model's own initialisation,
  seeded by ``seed``; run_networks.py ``load_model`` skips the DotProductClassifier's weights, lines 679-683)
  trained on the frozen features, 10 epochs (cls_crt.yaml ``num_epochs: 10``).

cRT and LWS train with class-balanced sampling (cls_*.yaml ``sampler: ClassAwareSampler``), here as draws with
replacement ∝ 1/n_c from a seeded generator (the sampler cycles classes and, within a class, its images: the same
distribution, without its round-robin); SGD lr 0.2, momentum 0.9, weight decay 5e-4 (cls_*.yaml ``optim_params``),
batch 512, cosine to 0 over the epochs (``coslr: true``, ``endlr: 0.0``), CE. ``stage2_steps`` says what an epoch
is: ``reference`` (the methods catalogue's) as classifier-balancing runs it: its sampler's length is n_max·C
(data/ClassAwareSampler.py line 74) but its loop stops each epoch after ``int(N / batch)`` batches, N the subset's
size (run_networks.py lines 61-63 and 265-266), and its ``CosineAnnealingLR`` is stepped at the start of each epoch
(line 255), so epoch e trains at lr·½(1 + cos(π e / E)) and the last one at 0; ``n_max`` (semscale's earlier
epoch, kept for the runs made with it) draws n_max·C samples per epoch (about 4× more on CIFAR-10-LT IF 100,
11× on ImageNet-LT) at lr·½(1 + cos(π (e − 1) / E)). **Features**: the frozen backbone's penultimate features are extracted once, in eval
mode, without augmentation (float32), and the classifier is trained on them. Kang et al. freeze the backbone
(``feat_model: fix: true``) and feed augmented images; with a frozen backbone the only differences are the
augmentation and BatchNorm's mode, and extracting once makes the second stage cost one forward pass over the
subset plus a linear model, deterministic on any device.

τ (``heldout``) is chosen on the balanced held-out split of unused training images (``pipeline.load_data(..., heldout=True)``,
``cdb_heldout`` images per class; never the test set) from τ ∈ {0, 0.1, …, 2} (tau_norm.py line 110 scans the same
grid, on the test set) by held-out accuracy, the smallest τ among ties. run.json records the grid and the
held-out accuracies (``second_stage``).

Epochs: epochs.csv holds the first stage's rows, then one row per second-stage epoch (cRT, LWS: epochs E+1..E+k)
or one row E+1 for the adjustment (post-hoc LA, τ-norm: no training, lr and loss NaN). per_class.csv's
``train_accuracy`` (and run.json's final ``train_loss``/``train_acc``) is the second-stage classifier's accuracy (CE)
on the un-augmented training subset in eval mode; its
S columns and pool_history.csv are the first stage's. Second stages are not checkpointed (seconds long).
"""

from __future__ import annotations

import json
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from . import cache, metrics, pipeline, records
from .build import build_network, cosine_lr, resolve, resolve_device
from .checkpoint import check_same_config
from .config import ConfigError, TrainConfig, first_stage, protocol_record
from .features import features_of
from .models import linear_head, set_linear_head

TAU_GRID = tuple(round(0.1 * k, 1) for k in range(21))  # tau_norm.py line 110: np.linspace(0, 2, 21)
DEFAULT_EPOCHS = {"crt": 10, "lws": 5}  # cls_crt.yaml / cls_lws.yaml num_epochs
MOMENTUM, WEIGHT_DECAY = 0.9, 5e-4  # cls_*.yaml optim_params
# what a second stage's record takes over from its first stage's (train.describe)
DESCRIBED = ("seed", "dataset", "dataset_variant", "subset", "classes", "normalization", "loss", "parameters", "engine")


def stage2_tau(config: TrainConfig) -> str | float:
    """The configured τ: 'heldout' or a number (defaults: 1 for posthoc-la, 'heldout' for tau-norm)."""
    if config.stage2_tau is None:
        return 1.0 if config.second_stage == "posthoc-la" else "heldout"
    return "heldout" if config.stage2_tau == "heldout" else float(config.stage2_tau)


# ---------------------------------------------------------------------------------------------------------
# the classifiers (pure functions of features and weights; tested by hand)


def posthoc_la(weight: torch.Tensor, bias: torch.Tensor, counts, tau: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(W, b − τ log π): Menon et al.'s post-hoc logit adjustment as a linear classifier."""
    n = torch.as_tensor(np.asarray(counts, dtype=np.float64))
    log_prior = (n / n.sum()).log().to(bias)
    return weight.clone(), bias - tau * log_prior


def tau_norm(weight: torch.Tensor, bias: torch.Tensor, tau: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(W_c / ‖W_c‖^τ, 0): Kang et al.'s τ-normalised classifier (their code drops the bias)."""
    norms = weight.norm(dim=1, keepdim=True)
    return weight / norms.pow(tau), torch.zeros_like(bias)


def lws(weight: torch.Tensor, bias: torch.Tensor, scales: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(s_c W_c, s_c b_c): learnable weight scaling folded into the linear classifier."""
    return weight * scales[:, None], bias * scales


def _accuracy_counts(features, labels, weight, bias, num_classes):
    logits = features @ weight.t() + bias
    return metrics.class_counts(logits.argmax(1), labels, num_classes)


def choose_tau(make, features, labels, num_classes) -> tuple[float, dict[float, float]]:
    """The τ of TAU_GRID with the best held-out accuracy (smallest among ties) and every τ's accuracy."""
    scores = {}
    for tau in TAU_GRID:
        correct, total = _accuracy_counts(features, labels, *make(tau), num_classes)
        scores[tau] = float(correct.sum()) / float(total.sum())
    best = max(scores.values())
    return min(t for t, a in scores.items() if a == best), scores


def balanced_draws(labels: torch.Tensor, counts, generator: torch.Generator, draws: int) -> torch.Tensor:
    """``draws`` sample ids (:func:`epoch_plan`) drawn with replacement, each with probability ∝ 1/n_y (class-balanced)."""
    p = pipeline.sampling_probabilities(labels, counts, "class-balanced")
    return torch.multinomial(p.float(), draws, replacement=True, generator=generator)


def epoch_plan(steps: str, epoch: int, epochs: int, lr: float, n: int, counts, batch_size: int) -> tuple[float, int]:
    """(learning rate, draws) of one second-stage epoch under ``stage2_steps`` (see the module docstring)."""
    if steps == "reference":
        return cosine_lr(lr, epoch + 1, epochs), (n // batch_size) * batch_size
    return cosine_lr(lr, epoch, epochs), int(np.max(counts)) * len(counts)


def train_classifier(features, labels, counts, weight, bias, *, learn: str, epochs: int, lr: float,
                     batch_size: int, seed: int, steps: str = "n_max", evaluate=None) -> tuple[torch.Tensor, torch.Tensor, list[dict]]:
    """Train a linear classifier on frozen ``features`` with class-balanced draws; ``learn`` is 'all' (cRT: W and b
    from the given initialisation) or 'scales' (LWS: s, init 1, W and b frozen); ``steps``: ``stage2_steps``.
    Returns (W, b, epoch rows)."""
    device = features.device
    if learn == "all":
        params = [weight.clone().requires_grad_(True), bias.clone().requires_grad_(True)]
    else:
        params = [torch.ones(weight.shape[0], device=device, requires_grad=True)]
    optimizer = torch.optim.SGD(params, lr=lr, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY)

    def current():
        return (params[0], params[1]) if learn == "all" else lws(weight, bias, params[0])

    rows = []
    for epoch in range(1, epochs + 1):
        epoch_lr, draws = epoch_plan(steps, epoch, epochs, lr, len(labels), counts, batch_size)
        for group in optimizer.param_groups:
            group["lr"] = epoch_lr
        generator = pipeline.epoch_generator(seed, 1_000_000 + epoch, device)  # apart from the first stage's epochs
        order = balanced_draws(labels, counts, generator, draws)
        start, loss_sum, correct = time.perf_counter(), torch.zeros((), dtype=torch.float64, device=device), 0
        for s in range(0, len(order), batch_size):
            ids = order[s:s + batch_size]
            w, b = current()
            logits = features[ids] @ w.t() + b
            loss = F.cross_entropy(logits, labels[ids])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += loss.detach().double() * len(ids)
            correct += (logits.detach().argmax(1) == labels[ids]).sum()
        seconds = time.perf_counter() - start
        row = {"lr": epoch_lr, "train_loss": float(loss_sum) / len(order),
               "train_acc": float(correct) / len(order), "img_per_s": len(order) / seconds, "seconds": seconds}
        if evaluate is not None:
            row.update(evaluate(*(t.detach() for t in current())))
        rows.append(row)
    w, b = current()
    return w.detach(), b.detach(), rows


# ---------------------------------------------------------------------------------------------------------
# a second stage as a run


def train_second_stage(config: TrainConfig, out_dir, first_dir, *, resume: bool = False) -> dict:
    """Run ``config``'s second stage into ``out_dir`` on its finished first stage in ``first_dir``; return the record.

    A finished ``out_dir`` is returned with ``resume`` and refused without. :func:`semscale.cli.train_run` trains
    the first stage first.
    """
    out, first_dir, wall_start = Path(out_dir), Path(first_dir), time.perf_counter()
    if (out / "run.json").exists():
        if not resume:
            raise FileExistsError(f"{out} already holds a run: resume it (--resume) or choose another --out")
        return json.loads((out / "run.json").read_text())
    first_config = first_stage(config)
    if not cache.run_complete(first_dir):
        raise FileNotFoundError(f"the first stage of this two-stage run is not finished in {first_dir}")
    first = json.loads((first_dir / "run.json").read_text())
    device = resolve_device(config.device)
    data = pipeline.load_data(first_config, device, heldout=True)  # τ's held-out split: cdb_heldout per class
    c = resolve(config, data.train_counts)
    first_c = first_stage(c)
    check_same_config(first["config"], first_c)  # the folder holds this config's first stage
    C = data.num_classes
    model = build_network(first_c, C, data.train_images.shape[1], device)  # seeded: its classifier is cRT's re-init
    if not isinstance(model.classifier, torch.nn.Linear):
        raise ConfigError(f"second_stage {c.second_stage!r} needs a linear classifier, the first stage has {type(model.classifier).__name__}")
    fresh_w, fresh_b = linear_head(model.classifier)
    model.load_state_dict(torch.load(first_dir / "model.pt", map_location=device, weights_only=True))
    model.eval()
    step = c.eval_batch_size
    start = time.perf_counter()
    f_train = features_of(model, data.train_images, data.mean, data.std, step)
    f_test = features_of(model, data.test_images, data.mean, data.std, step)
    held_labels, from_subset = data.heldout_labels, data.heldout_from_subset
    f_held = features_of(model, data.heldout_images, data.mean, data.std, step)
    extract_seconds = time.perf_counter() - start
    W0, b0 = linear_head(model.classifier)  # logits = f W0ᵀ + b0, a ScaledLinear's scale folded into W0

    def test_metrics(w, b):
        return metrics.accuracy_summary(*_accuracy_counts(f_test, data.test_labels, w, b, C), data.train_counts)

    def row_metrics(w, b):
        m = test_metrics(w, b)
        return {k: m[k] for k in ("top1", "balanced", "many", "medium", "few")}

    info: dict = {"kind": c.second_stage, "first_stage": {"run": first_dir.name, "source_sha256": first.get("source_sha256"),
                                                          "git_commit": first.get("git_commit"), "final": first["final"]},
                  "features": "penultimate features of the frozen first-stage network, eval mode, no augmentation, float32, extracted once",
                  "heldout_per_class": c.cdb_heldout, "heldout_from_subset": from_subset,
                  "feature_seconds": extract_seconds}
    start = time.perf_counter()
    rows: list[dict] = []
    if c.second_stage in ("posthoc-la", "tau-norm"):
        def make(tau):
            return posthoc_la(W0, b0, data.train_counts, tau) if c.second_stage == "posthoc-la" else tau_norm(W0, b0, tau)

        tau = stage2_tau(c)
        chosen, scores = choose_tau(make, f_held, held_labels, C)
        info.update({"tau_setting": tau, "tau": chosen if tau == "heldout" else tau, "tau_grid": list(TAU_GRID),
                     "heldout_accuracy": {str(t): a for t, a in scores.items()}})
        W, b = make(info["tau"])
        rows.append({"lr": float("nan"), "train_loss": float("nan"), "train_acc": float("nan"), **row_metrics(W, b),
                     "img_per_s": float("nan"), "seconds": 0.0})
    else:
        epochs = c.stage2_epochs or DEFAULT_EPOCHS[c.second_stage]
        init_w, init_b = (fresh_w, fresh_b) if c.second_stage == "crt" else (W0, b0)
        W, b, rows = train_classifier(f_train, data.train_labels, data.train_counts, init_w, init_b,
                                      learn="all" if c.second_stage == "crt" else "scales", epochs=epochs,
                                      lr=c.stage2_lr, batch_size=c.stage2_batch_size, seed=c.seed, steps=c.stage2_steps,
                                      evaluate=row_metrics)
        reference = c.stage2_steps == "reference"
        info.update({"epochs": epochs, "lr": c.stage2_lr, "batch_size": c.stage2_batch_size, "momentum": MOMENTUM,
                     "weight_decay": WEIGHT_DECAY, "loss": "ce", "steps": c.stage2_steps,
                     "schedule": "cosine to 0, stepped at each epoch's start" if reference else "cosine to 0",
                     "sampling": "class-balanced draws with replacement, "
                                 + ("int(N / batch) batches per epoch" if reference else "n_max*C per epoch")})
        if c.second_stage == "lws":
            info["scales"] = (W.norm(dim=1) / W0.norm(dim=1)).tolist()
    train_seconds = time.perf_counter() - start
    test = test_metrics(W, b)
    train_correct, _ = _accuracy_counts(f_train, data.train_labels, W, b, C)

    out.mkdir(parents=True, exist_ok=True)
    E = first_config.epochs
    first_rows = pd.read_csv(first_dir / "epochs.csv")
    stage_rows = pd.DataFrame([{"epoch": E + i + 1, **r, "eval_seconds": 0.0} for i, r in enumerate(rows)])
    records.write_csv_atomic(out / "epochs.csv", pd.concat([first_rows, stage_rows.reindex(columns=first_rows.columns)], ignore_index=True))
    records.write_bytes_atomic(out / "pool_history.csv", (first_dir / "pool_history.csv").read_bytes())
    per_class = pd.read_csv(first_dir / "per_class.csv")
    per_class["accuracy"] = test["per_class"]
    per_class["train_accuracy"] = train_correct.cpu().numpy() / np.maximum(data.train_counts, 1)
    records.write_csv_atomic(out / "per_class.csv", per_class)
    state = model.state_dict()
    set_linear_head(state, model.classifier, W, b)
    records.save_torch_atomic(out / "model.pt", state)
    wall = time.perf_counter() - wall_start
    images = len(data.train_labels) if c.second_stage in ("posthoc-la", "tau-norm") else int(np.max(data.train_counts)) * C
    record = records.run_record(
        c, protocol_record(c), {k: first[k] for k in DESCRIBED}, device,
        started=datetime.fromtimestamp(time.time() - wall, timezone.utc).isoformat(timespec="seconds"),
        wall_seconds=wall, train_seconds=train_seconds,
        img_per_s=len(rows) * images / train_seconds if train_seconds > 0 else float("nan"),
        final={**{k: test[k] for k in ("top1", "balanced", "many", "medium", "few")},
               "train_loss": float(F.cross_entropy(f_train @ W.t() + b, data.train_labels)),
               "train_acc": float(train_correct.sum()) / len(data.train_labels)},
        second_stage=info, first_stage_wall_seconds=first["wall_seconds"])
    records.write_json_atomic(out / "run.json", record)
    return record
