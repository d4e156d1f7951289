"""Stacked runs: K compatible runs trained as one network, each member written as the run it stands for.

    records = stack.train_stack([config_a, config_b, config_c], ["runs/a", "runs/b", "runs/c"], resume=True)
    groups = stack.plan(configs, size=8)          # which configs can train together, in order
    sweep.run(points, root, stack="auto")          # the sweep groups compatible points (semscale.sweep)

On a GPU a ResNet-32 step at batch 128 is launch-bound; K runs in one network make each kernel do K runs' work.
The members share the network's architecture, the data and its subset, the protocol, batch size and epochs
(:func:`stack_key`) and may differ in what :data:`MEMBER_FIELDS` names: the seed, DSB on or off, the loss within the
reweighted/adjusted-softmax family and their parameters, evaluation and checkpointing.

* The network: ``torch.func.stack_module_state`` stacks the members' parameters and buffers (K, ...) and
  ``torch.vmap`` runs the members' ``forward_with_features`` over them. PyTorch lowers a convolution whose input
  and weight are both batched to ONE convolution with ``groups`` × K over K × C channels, and its backward likewise
  (aten/src/ATen/functorch/BatchRulesConvolution.cpp at 05083ee, ``convolution_batch_rule``, the branch
  ``lhs_bdim && rhs_bdim``, lines 96-102; ``convolution_backward_*_batch_rule`` with ``groups * batch_size``);
  batch norm normalises each member's channels with its own statistics; the classifier is a batched matrix product.
* Each member is a :class:`semscale.build.Run` built exactly as a separate run (initial weights from its seed, its
  own loss, DSB pool, epoch generator: permutation, crops and flips), so member k sees its own batches. The total
  loss is the sum of the members' losses: the gradient of member k's weights is its own loss's. One optimiser steps
  the stacked weights; SGD and Adam are elementwise, so each member's update is its own.
* At the end of every epoch (and before a checkpoint) the stacked weights, batch-norm statistics and optimiser
  state are written back into the members' own models and optimisers; evaluation, CDB's update, the records and
  the checkpoints are then the engine's own per run (:mod:`semscale.train`). So each member's folder holds the files
  of a separate run (same names, same columns) under its config's hash; run.json adds ``stack`` (how many members
  the stack started with, this member's place). A stacked member's checkpoint resumes alone or in a stack.
* A member whose training diverges leaves the stack at the end of that epoch; the others go on in a smaller stack
  (:class:`StackMembersFailed` names it afterwards).
* What differs from separate runs: floating-point summation order (a grouped convolution is not the same kernel),
  so members match separate runs to rounding at the first step and drift apart like runs on two machines after
  that (the equivalence tests bound it); a member's ``train_seconds`` (and per-epoch ``seconds``) are the time the
  whole stack took, so its ``img_per_s`` is its own images over that shared time (1/K of the stack's rate): no
  measure of a method's cost (:func:`semscale.study.longtail.cost_table` leaves stacked runs out); every member
  writes a checkpoint when any member's ``checkpoint_every`` is due.
* Not stackable (:func:`not_stackable`): Meta-Weight-Net (its meta step), second stages, ``torch.compile``,
  lookahead and the airbench networks (their whitening layer's bias freezes mid-run).
"""

from __future__ import annotations

import copy
import dataclasses
import signal
import time
import typing
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from . import checkpoint, pipeline, train
from .build import Run, resolve_device, set_learning_rate
from .checkpoint import TrainingInterrupted
from .config import ConfigError, TrainConfig

__all__ = ["MEMBER_FIELDS", "stack_key", "not_stackable", "plan", "auto_size", "StackedNetwork", "StackMembersFailed",
           "train_stack"]

#: The fields in which the members of one stack may differ.
MEMBER_FIELDS = (
    "seed", "loss", "label_smoothing", "reweight", "reduction", "focal_gamma", "ldam_max_m", "ldam_s", "logit_tau",
    "cb_beta", "drw_fraction", "cdb_tau", "gce_q", "gca_margin",
    "dsb", "dsb_stage_epochs", "dsb_alpha", "dsb_eps", "track_pool", "pool_dim", "record_drift",
    "eval_heldout", "eval_every", "eval_batch_size", "checkpoint_every", "progress",
)


def not_stackable(config: TrainConfig) -> str | None:
    """Why a run of ``config`` cannot be a stack's member, or None."""
    if config.mwn:
        return "Meta-Weight-Net takes a meta step of its own"
    if config.second_stage != "none":
        return "a second stage trains on a finished first stage"
    if config.compile != "none":
        return "torch.compile of the member network"
    if config.lookahead:
        return "lookahead"
    if config.model.startswith("airbench"):
        return "the airbench networks freeze their whitening bias mid-run"
    return None


def stack_key(config: TrainConfig) -> tuple:
    """What the members of one stack share: every field outside MEMBER_FIELDS, and the classifier the loss resolves
    to (LDAM's cosine classifier is another network)."""
    shared = {k: v for k, v in dataclasses.asdict(config).items() if k not in MEMBER_FIELDS}
    shared["normed_classifier"] = config.normed_classifier if config.normed_classifier is not None else config.loss == "ldam"
    return tuple(sorted((k, repr(v)) for k, v in shared.items()))


def plan(configs: typing.Sequence[TrainConfig], size: int) -> list[list[int]]:
    """Indices of ``configs`` in groups of at most ``size`` that can train as one stack, in the order of their first
    member; a config that cannot be stacked is a group of one."""
    if size < 1:
        raise ValueError(f"a stack has at least one member, got {size}")
    groups: list[list[int]] = []
    open_groups: dict[tuple, list[int]] = {}
    for i, config in enumerate(configs):
        key = None if size == 1 or not_stackable(config) else stack_key(config)
        group = open_groups.get(key) if key is not None else None
        if group is None or len(group) >= size:
            group = [i]
            groups.append(group)
            if key is not None:
                open_groups[key] = group
        else:
            group.append(i)
    return groups


#: Members per stack that ``stack="auto"`` takes, by device type. CPU: 1, because stacking was measured slower there
#: (BENCHMARKS.md, "Stacked runs": grouped convolutions cost more per image than K separate ones on 2 cores).
#: CUDA: 16, the middle of the range the stacked-runs issue asks to measure (K = 4 ... 32); not measured yet.
AUTO_SIZE = {"cpu": 1, "cuda": 16}


def auto_size(device: str = "auto") -> int:
    """The stack size ``stack="auto"`` takes on ``device`` (a config's ``device`` field)."""
    return AUTO_SIZE.get(resolve_device(device).type, 1)


class _WithFeatures(nn.Module):
    """A member network whose forward is ``forward_with_features`` (what ``functional_call`` calls)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.model.forward_with_features(x)


class StackedNetwork:
    """The members' networks as stacked tensors, their vmapped forward, and one optimiser of the stacked weights."""

    def __init__(self, runs: list[Run]):
        self.runs = runs
        networks = [_WithFeatures(run.model) for run in runs]
        self.params, self.buffers = torch.func.stack_module_state(networks)
        template = copy.deepcopy(networks[0]).to("meta")

        def member(params, buffers, x):
            return torch.func.functional_call(template, (params, buffers), (x,))

        self._forward = torch.vmap(member, randomness="different")
        self.names = {id(p): "model." + name for name, p in runs[0].model.named_parameters()}
        self.optimizer = self._optimizer()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits, features), each (K, B, ...), of the members' batches ``x`` (K, B, C, H, W)."""
        return self._forward(self.params, self.buffers, x)

    def _optimizer(self) -> torch.optim.Optimizer:
        """The members' optimiser (same class, groups, rates and decay) over the stacked weights, with their state."""
        first = self.runs[0].optimizer
        groups = []
        for group in first.param_groups:
            stacked = [self.params[self.names[id(p)]] for p in group["params"]]
            groups.append({**{k: v for k, v in group.items() if k != "params"}, "params": stacked})
        optimizer = type(first)(groups, **first.defaults)
        members = [run.optimizer for run in self.runs]
        for stacked_group, *member_groups in zip(optimizer.param_groups, *(o.param_groups for o in members)):
            for stacked, *params in zip(stacked_group["params"], *(g["params"] for g in member_groups)):
                states = [o.state.get(p, {}) for o, p in zip(members, params)]
                if states[0]:  # a resumed run: its momentum (SGD) or moments (Adam)
                    optimizer.state[stacked] = {k: torch.stack([s[k] for s in states]) if v.dim() else v.clone()
                                                for k, v in states[0].items()}
        return optimizer

    @torch.no_grad()
    def write_back(self) -> None:
        """Each member's slice of the weights, batch-norm statistics and optimiser state into its own run."""
        for k, run in enumerate(self.runs):
            for name, tensor in _WithFeatures(run.model).named_parameters():
                tensor.copy_(self.params[name][k])
            for name, tensor in _WithFeatures(run.model).named_buffers():
                tensor.copy_(self.buffers[name][k])
            for stacked_group, group in zip(self.optimizer.param_groups, run.optimizer.param_groups):
                for stacked, p in zip(stacked_group["params"], group["params"]):
                    state = self.optimizer.state.get(stacked)
                    if state:
                        run.optimizer.state[p] = {key: v[k].clone() if v.dim() else v.clone() for key, v in state.items()}
                group["lr"] = stacked_group["lr"]


def stacked_step(net: StackedNetwork, batches: list[tuple], weighting: list[bool]) -> list[tuple]:
    """One SGD step of every member on its own batch: the stacked forward, each member's pool update and
    (DSB-weighted) loss, one backward of their sum, one optimiser step. Returns each member's (loss, logits)."""
    runs = net.runs
    x = torch.stack([b[1] for b in batches])
    with runs[0].autocast():
        logits, features = net.forward(x)
    outputs, total, used = [], 0.0, []
    for k, (run, (ids, _, y)) in enumerate(zip(runs, batches)):
        run.store_features(ids, features[k])
        class_weights = run.dsb_weights(weighting[k])
        loss = run.loss(logits[k], y, class_weights=class_weights)
        total = total + loss
        outputs.append((loss.detach(), logits[k].detach()))
        used.append(class_weights)
    net.optimizer.zero_grad(set_to_none=True)
    total.backward()
    net.optimizer.step()
    for run, (ids, _, _), class_weights in zip(runs, batches, used):
        for hook in run.hooks:
            hook.after_step(run, ids, class_weights)
    return outputs


class _Member(typing.NamedTuple):
    index: int  # in train_stack's configs
    config: TrainConfig  # as given (the run resolves it)
    out: Path
    resume: bool
    run: Run
    history: dict


class StackMembersFailed(RuntimeError):
    """Some members of a stack failed (their training diverged); the others finished. ``records`` and ``errors``:
    one per config of :func:`train_stack`, None where the member failed or where it did not."""

    def __init__(self, records: list[dict | None], errors: list[BaseException | None]):
        failed = [i for i, e in enumerate(errors) if e is not None]
        super().__init__(f"{len(failed)} stacked run(s) failed (configs {failed}), the others finished: "
                         + "; ".join(f"{type(errors[i]).__name__}: {errors[i]}" for i in failed[:3]))
        self.records, self.errors = records, errors


def train_stack(configs: typing.Sequence[TrainConfig], out_dirs: typing.Sequence,
                resume: bool | typing.Sequence[bool] = False) -> list[dict]:
    """Train the runs of ``configs`` into ``out_dirs`` as stacks and return their records, in order (each also in its
    folder's run.json, as :func:`semscale.train.train` writes it).

    ``resume`` (one for all, or one per run) as in :func:`semscale.train.train`: finished runs are read back;
    members that stopped at different points continue in stacks of those at the same point (one alone trains as a
    plain run). ConfigError when the configs cannot share a stack (:func:`stack_key`, :func:`not_stackable`).
    Raises TrainingInterrupted after saving every member's checkpoint on SIGINT/SIGTERM or ``stop_after_epoch``, and
    StackMembersFailed after the others finished when a member's training diverged (it leaves the stack at once)."""
    wall_start = time.perf_counter()
    configs, outs = list(configs), [Path(o) for o in out_dirs]
    resumes = [resume] * len(configs) if isinstance(resume, bool) else list(resume)
    if not (len(configs) == len(outs) == len(resumes)) or not configs:
        raise ValueError("train_stack needs one out_dir (and one resume flag, if a list) per config, and a config")
    for config in configs:
        why = not_stackable(config)
        if why:
            raise ConfigError(f"cannot stack {config.loss} seed {config.seed}: {why}; train it with semscale.train.train")
    if len({stack_key(c) for c in configs}) > 1:
        raise ConfigError("these configs cannot share a stack: they differ outside MEMBER_FIELDS (semscale.stack)")
    device = resolve_device(configs[0].device)
    data = pipeline.load_data(configs[0], device, heldout=any(c.reweight == "cdb" or c.eval_heldout for c in configs))
    records: list[dict | None] = [None] * len(configs)
    errors: list[BaseException | None] = [None] * len(configs)
    waiting: dict[tuple, list[tuple]] = {}
    for i, (config, out, again) in enumerate(zip(configs, outs, resumes)):
        started = train._start(config, out, again, [], data)
        if isinstance(started, dict):
            records[i] = started
        else:
            run, next_epoch, state, history = started
            at = (next_epoch, state.next_batch if state else 0)
            waiting.setdefault(at, []).append((_Member(i, config, out, again, run, history), state))
    for at in sorted(waiting):
        group = waiting[at]
        if len(group) == 1:  # nothing to stack it with
            member = group[0][0]
            records[member.index] = train.train(member.config, member.out, resume=member.resume)
            continue
        finished, failed = _train_members(group, at[0], wall_start)
        for i, record in finished.items():
            records[i] = record
        for i, error in failed.items():
            errors[i] = error
        wall_start = time.perf_counter()  # a later group's clock starts when it does
    if any(e is not None for e in errors):
        raise StackMembersFailed(records, errors)
    return records


def _train_members(members: list[tuple[_Member, train.EpochState | None]], next_epoch: int,
                   wall_start: float) -> tuple[dict[int, dict], dict[int, BaseException]]:
    """Train members that stand at the same point as one stack to the end: their records, and the errors of those
    whose training diverged (each left the stack in the epoch it diverged), by index."""
    states = [s for _, s in members]
    members = [m for m, _ in members]
    config, n, size = members[0].run.config, len(members[0].run.data.train_labels), len(members)
    for m in members:
        m.out.mkdir(parents=True, exist_ok=True)
    net = StackedNetwork([m.run for m in members])
    failed: dict[int, BaseException] = {}

    def save(next_epoch: int, current: list | None, stop) -> None:
        """Every member's checkpoint (also those whose checkpoint_every is not due: they train in one network)."""
        nonlocal wall_start
        net.write_back()
        elapsed, wall_start = time.perf_counter() - wall_start, time.perf_counter()
        for k, m in enumerate(members):
            m.history["wall_seconds"] += elapsed
            with stop.writing():
                checkpoint.save(m.out / "checkpoint.pt", m.run, next_epoch, None if current is None else current[k],
                                m.history)

    def stop_here(epoch: int, current: list | None, reason: str, signum: int | None, stop):
        save(epoch if current is not None else epoch + 1, current, stop)
        where = (f"epoch {epoch}, iteration {current[0].next_batch}/{members[0].run.num_batches}" if current
                 else f"the end of epoch {epoch}")
        raise TrainingInterrupted(f"{reason}: stopped at {where}; checkpoints saved for the {len(members)} stacked runs "
                                  f"({', '.join(str(m.out) for m in members[:3])}{', ...' if len(members) > 3 else ''}). "
                                  f"Continue with the same call and resume=True", members[0].out, signum)

    done = (next_epoch - 1) * n + (states[0].next_batch * config.batch_size if states[0] else 0)
    bar = tqdm(total=config.epochs * n * size, initial=min(done, config.epochs * n) * size, unit="img",
               unit_scale=True, disable=not config.progress, dynamic_ncols=True)
    tests, positions = [None] * size, list(range(size))  # positions: each member's place in the stack as it started
    with checkpoint.stop_signals() as stop, bar:
        for epoch in range(next_epoch, config.epochs + 1):
            bar.set_description(f"stack of {len(members)}, epoch {epoch}/{config.epochs}")
            states = [s if s is not None and s.epoch == epoch else train.new_epoch(m.run, epoch) for m, s in zip(members, states)]
            _train_epoch(net, states, lambda: stop.requested, bar)
            if states[0].next_batch < members[0].run.num_batches:
                stop_here(epoch, states, signal.Signals(stop.signum).name, stop.signum, stop)
            net.write_back()
            healthy = []
            for k, (m, state) in enumerate(zip(members, states)):
                try:
                    tests[k] = train.end_epoch(m.run, state, m.history)
                except train.TrainingDiverged as e:  # it leaves the stack; the others go on
                    failed[m.index] = e
                    continue
                train._write_history(m.out, m.history)
                healthy.append(k)
            if not healthy:
                return {}, failed
            if len(healthy) < len(members):
                members, states, tests, positions = ([x[k] for k in healthy] for x in (members, states, tests, positions))
                net = StackedNetwork([m.run for m in members])  # from the written-back weights and optimiser state
            if stop.requested and epoch < config.epochs:  # after the last epoch the runs finish: only records are left
                stop_here(epoch, None, signal.Signals(stop.signum).name, stop.signum, stop)
            if epoch < config.epochs and epoch == config.stop_after_epoch:
                stop_here(epoch, None, f"stop_after_epoch={epoch}", None, stop)
            due = [m.run.config.checkpoint_every and epoch % m.run.config.checkpoint_every == 0 for m in members]
            if any(due) and epoch < config.epochs:
                save(epoch + 1, None, stop)
    elapsed = time.perf_counter() - wall_start
    records = {}
    for k, (m, state) in enumerate(zip(members, states)):
        m.history["wall_seconds"] += elapsed
        records[m.index] = train._finish(m.run, m.out, m.history, tests[k], state,
                                         stack={"members": size, "member": positions[k], "network": "torch.func.vmap (grouped)"})
    return records, failed


def _train_epoch(net: StackedNetwork, states: list[train.EpochState], should_stop, bar) -> None:
    """:func:`semscale.train.train_epoch` for a stack: every member's batches in lockstep."""
    runs = net.runs
    weighting = [train.begin_epoch(run, state) for run, state in zip(runs, states)]
    for group, member_group in zip(net.optimizer.param_groups, runs[0].optimizer.param_groups):
        group["lr"] = member_group["lr"]  # the epoch's rate, set by begin_epoch (per-epoch schedules)
    start = time.perf_counter()
    streams = [pipeline.batches(run.data, run.config, state.order, state.generator, state.next_batch,
                                torch.contiguous_format, state.flips) for run, state in zip(runs, states)]
    for batches in zip(*streams):
        lr = train.step_learning_rate(runs[0], states[0])
        if lr is not None:
            set_learning_rate(net.optimizer, lr)
        for state, (_, _, y), (loss, logits) in zip(states, batches, stacked_step(net, list(batches), weighting)):
            train.count_batch(state, y, loss, logits)
        if bar is not None:
            bar.update(len(batches[0][0]) * len(runs))
        if should_stop():
            break
    if runs[0].device.type == "cuda":
        torch.cuda.synchronize(runs[0].device)
    seconds = time.perf_counter() - start
    for state in states:
        state.seconds += seconds
