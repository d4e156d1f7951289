"""semscale.checkpoint: which config changes a resume accepts, the checkpoint's format, the stop request."""

import dataclasses
import signal

import pytest
import torch
from conftest import tiny_config
from semscale import checkpoint
from semscale.config import ConfigError
from semscale.train import TrainingInterrupted, train


def test_check_same_config_accepts_only_execution_fields_changing():
    saved = dataclasses.asdict(tiny_config())
    checkpoint.check_same_config(saved, tiny_config(device="cpu", progress=True, eval_every=0, checkpoint_every=1,
                                                    stop_after_epoch=1, eval_batch_size=7))
    with pytest.raises(ConfigError, match=r"(?s)only device, compile, progress.*lr: checkpoint 0.05, now 0.1.*seed: checkpoint 0, now 1"):
        checkpoint.check_same_config(saved, tiny_config(lr=0.1, seed=1))
    # a checkpoint written before a field existed holds that field's default
    older = {k: v for k, v in saved.items() if k not in ("sampler", "record_drift")}
    checkpoint.check_same_config(older, tiny_config())
    with pytest.raises(ConfigError, match="sampler: checkpoint 'none', now 'sqrt'"):
        checkpoint.check_same_config(older, tiny_config(sampler="sqrt"))


def test_a_checkpoint_of_another_format_is_refused(tmp_path):
    with pytest.raises(TrainingInterrupted):
        train(tiny_config(stop_after_epoch=1), tmp_path)
    saved = checkpoint.read(tmp_path / "checkpoint.pt")
    assert saved["format"] == checkpoint.CHECKPOINT_FORMAT and saved["next_epoch"] == 2 and saved["epoch_state"] is None
    assert len(saved["history"]["epochs"]) == 1
    torch.save({**saved, "format": 1}, tmp_path / "checkpoint.pt")
    with pytest.raises(ConfigError, match=f"checkpoint format 1, this code reads {checkpoint.CHECKPOINT_FORMAT}: delete it"):
        train(tiny_config(), tmp_path, resume=True)


def test_the_first_signal_asks_to_stop_and_the_second_stops_now():
    handler_before = signal.getsignal(signal.SIGTERM)
    with checkpoint.stop_signals() as stop:
        assert signal.getsignal(signal.SIGTERM) is stop and not stop.requested
        stop(signal.SIGTERM, None)
        assert stop.requested and stop.signum == signal.SIGTERM
        with pytest.raises(KeyboardInterrupt):
            stop(signal.SIGINT, None)
    assert signal.getsignal(signal.SIGTERM) is handler_before


def test_a_second_stop_signal_waits_for_the_checkpoint_being_written(monkeypatch):
    """Ctrl-C twice stops at once, but never in the middle of writing a checkpoint; a sweep's worker (nobody at its
    keyboard) never stops at once: its second signal must not cut off the checkpoint the first one asked for."""
    stop = checkpoint.StopRequest()
    stop(signal.SIGTERM, None)
    with pytest.raises(KeyboardInterrupt):
        with stop.writing():
            stop(signal.SIGTERM, None)  # waits...
            written = True  # ...for the file
    assert written
    with pytest.raises(KeyboardInterrupt):
        stop(signal.SIGINT, None)  # outside a write: at once
    monkeypatch.setattr(checkpoint, "REPEAT_STOPS_NOW", False)
    with stop.writing():
        stop(signal.SIGTERM, None)
    stop(signal.SIGTERM, None)
    assert stop.requested and stop.signum == signal.SIGTERM
