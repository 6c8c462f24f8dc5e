"""SafeCheckpointer: a checkpoint appears whole or not at all, recovery skips
one that cannot be read and stops at one that does not fit the model."""

import logging
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch
from speechbrain.utils.checkpoints import Checkpointer

from speechbrain_pom.utils.checkpoints import (
    REPLACED_PREFIX,
    STAGING_PREFIX,
    CheckpointMismatchError,
    SafeCheckpointer,
)


def checkpointer_with_model(folder, value):
    model = torch.nn.Linear(1, 1, bias=False)
    torch.nn.init.constant_(model.weight, value)
    return SafeCheckpointer(folder, {"model": model}), model


def visible_checkpoints(folder):
    return sorted(name for name in os.listdir(folder) if name.startswith("CKPT"))


def test_a_save_that_fails_leaves_no_checkpoint(tmp_path):
    checkpointer, model = checkpointer_with_model(tmp_path, 1.0)
    good = checkpointer.save_checkpoint(meta={"step": 1})

    def failing_save(obj, path):
        path.write_bytes(b"half a file")
        raise OSError(28, "No space left on device")

    checkpointer.add_recoverable("optimizer", object(), custom_save_hook=failing_save)
    with pytest.raises(OSError):
        checkpointer.save_checkpoint(meta={"step": 2})
    assert visible_checkpoints(tmp_path) == [good.path.name]
    # The next save cleans what the failed one left.
    checkpointer.recoverables.pop("optimizer")
    checkpointer.save_checkpoint(meta={"step": 3})
    assert not [n for n in os.listdir(tmp_path) if n.startswith(STAGING_PREFIX)]
    assert len(visible_checkpoints(tmp_path)) == 2


@pytest.mark.parametrize("damage", ["meta_only", "truncated", "empty_meta"])
def test_recovery_falls_back_to_the_previous_good_checkpoint(tmp_path, caplog, damage):
    checkpointer, model = checkpointer_with_model(tmp_path, 1.0)
    good = checkpointer.save_checkpoint(meta={"step": 1})
    time.sleep(0.01)
    torch.nn.init.constant_(model.weight, 2.0)
    broken = checkpointer.save_checkpoint(meta={"step": 2})
    if damage == "meta_only":  # what SpeechBrain leaves when killed mid-save
        os.remove(broken.path / "model.ckpt")
    elif damage == "truncated":
        data = (broken.path / "model.ckpt").read_bytes()
        (broken.path / "model.ckpt").write_bytes(data[: len(data) // 2])
    else:
        (broken.path / "CKPT.yaml").write_text("")

    fresh, fresh_model = checkpointer_with_model(tmp_path, 0.0)
    with caplog.at_level(logging.WARNING):
        recovered = fresh.recover_if_possible()
    assert recovered.path == good.path
    assert fresh_model.weight.item() == 1.0
    assert str(broken.path) in caplog.text


@pytest.mark.parametrize(
    "other_model, mismatch",
    [
        (torch.nn.Linear(1, 2, bias=False), "1 shape mismatches: weight"),
        (torch.nn.Linear(1, 1, bias=True), "1 missing keys: bias"),
    ],
)
def test_a_checkpoint_that_does_not_fit_stops_recovery_and_is_kept(
    tmp_path, other_model, mismatch
):
    """A rerun with another model size in the same folder: nothing is loaded,
    nothing deleted, and the error names the folder and the keys."""
    checkpointer, _ = checkpointer_with_model(tmp_path, 1.0)
    saved = checkpointer.save_checkpoint(meta={"step": 1})
    files_before = sorted(os.listdir(saved.path))
    weights_before = [p.clone() for p in other_model.parameters()]

    rerun = SafeCheckpointer(tmp_path, {"model": other_model})
    with pytest.raises(CheckpointMismatchError) as error:
        rerun.recover_if_possible()
    message = str(error.value)
    assert str(saved.path) in message and mismatch in message
    assert "\n" not in message
    for before, after in zip(weights_before, other_model.parameters(), strict=True):
        assert torch.equal(before, after)
    assert visible_checkpoints(tmp_path) == [saved.path.name]
    assert sorted(os.listdir(saved.path)) == files_before


def test_an_optimizer_with_other_parameter_groups_does_not_fit(tmp_path):
    model = torch.nn.Linear(1, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    SafeCheckpointer(tmp_path, {"optimizer": optimizer}).save_checkpoint()
    other = torch.optim.SGD(
        [{"params": [model.weight]}, {"params": [model.bias]}], lr=0.1
    )
    with pytest.raises(CheckpointMismatchError, match=r"\[2\].*\[1, 1\]"):
        SafeCheckpointer(tmp_path, {"optimizer": other}).recover_if_possible()


def test_a_load_that_fails_half_way_stops_the_run(tmp_path):
    """The model is loaded, then another recoverable fails: the run must not
    go on with one half from the checkpoint and the other fresh."""
    checkpointer, _ = checkpointer_with_model(tmp_path, 1.0)
    checkpointer.add_recoverable(
        "counter", object(), custom_save_hook=lambda obj, path: path.write_text("7")
    )
    checkpointer.save_checkpoint()

    def failing_load(obj, path, end_of_epoch):
        raise ValueError("not what this loader expects")

    fresh, _ = checkpointer_with_model(tmp_path, 0.0)
    fresh.add_recoverable("counter", object(), custom_load_hook=failing_load)
    with pytest.raises(CheckpointMismatchError, match="partly loaded"):
        fresh.recover_if_possible()


def test_a_kill_during_a_named_resave_keeps_the_old_checkpoint(tmp_path, monkeypatch):
    """Killed after the old checkpoint of a name is moved away and before the
    new one is moved in: recovery puts the old one back."""
    checkpointer, model = checkpointer_with_model(tmp_path, 1.0)
    checkpointer.save_checkpoint(name="best")
    torch.nn.init.constant_(model.weight, 2.0)
    rename = os.rename

    def killed_before_moving_in(source, target):
        if os.path.basename(source).startswith(STAGING_PREFIX):
            raise KeyboardInterrupt  # stands for the kill
        rename(source, target)

    monkeypatch.setattr(os, "rename", killed_before_moving_in)
    with pytest.raises(KeyboardInterrupt):
        checkpointer.save_checkpoint(name="best")
    monkeypatch.setattr(os, "rename", rename)

    fresh, fresh_model = checkpointer_with_model(tmp_path, 0.0)
    assert fresh.recover_if_possible().path.name == "CKPT+best"
    assert fresh_model.weight.item() == 1.0
    assert sorted(os.listdir(tmp_path)) == ["CKPT+best"]


def test_recovery_removes_an_old_copy_left_by_a_killed_resave(tmp_path):
    """Killed after the new checkpoint is moved in, before the old copy is
    removed: the new one is loaded, the old copy removed."""
    checkpointer, model = checkpointer_with_model(tmp_path, 1.0)
    checkpointer.save_checkpoint(name="best")
    torch.nn.init.constant_(model.weight, 2.0)
    checkpointer.save_checkpoint(name="best")
    (tmp_path / f"{REPLACED_PREFIX}CKPT+best").mkdir()  # the old copy, left

    fresh, fresh_model = checkpointer_with_model(tmp_path, 0.0)
    fresh.recover_if_possible()
    assert fresh_model.weight.item() == 2.0
    assert sorted(os.listdir(tmp_path)) == ["CKPT+best"]


def test_sigkill_during_save_then_resume(tmp_path):
    """A process killed with SIGKILL while it writes a checkpoint."""
    script = textwrap.dedent(
        f"""
        import sys, time, torch
        from speechbrain_pom.utils.checkpoints import SafeCheckpointer

        def slow_save(obj, path):
            torch.save(obj.state_dict(), path)
            print("saving", flush=True)
            time.sleep(60)  # killed here, the checkpoint half written

        model = torch.nn.Linear(1, 1, bias=False)
        torch.nn.init.constant_(model.weight, 1.0)
        checkpointer = SafeCheckpointer({str(tmp_path)!r}, {{"model": model}})
        checkpointer.save_checkpoint(meta={{"step": 1}})
        torch.nn.init.constant_(model.weight, 2.0)
        checkpointer.add_recoverable("slow", model, custom_save_hook=slow_save)
        checkpointer.save_checkpoint(meta={{"step": 2}})
        """
    )
    process = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, text=True
    )
    assert process.stdout.readline().strip() == "saving"
    os.kill(process.pid, signal.SIGKILL)
    process.wait()

    assert len(visible_checkpoints(tmp_path)) == 1
    # SpeechBrain's own Checkpointer would also recover it now.
    assert Checkpointer(tmp_path).find_checkpoint().meta["step"] == 1
    fresh, fresh_model = checkpointer_with_model(tmp_path, 0.0)
    assert fresh.recover_if_possible().meta["step"] == 1
    assert fresh_model.weight.item() == 1.0


def test_pretrained_encoder_skips_an_unreadable_best_checkpoint(tmp_path, caplog):
    """The CTC recipe's pt_model_path: a save folder whose best checkpoint
    was broken by a crash gives the next best one, with a warning."""
    from speechbrain.processing.features import InputNormalization

    from speechbrain_pom.utils.parameter_transfer import load_bestrq_encoder

    def modules(value):
        cnn, wrapper = torch.nn.Linear(1, 1), torch.nn.Linear(1, 1)
        for module in (cnn, wrapper):
            torch.nn.init.constant_(module.weight, value)
        return cnn, wrapper, InputNormalization()

    cnn, wrapper, normalize = modules(1.0)
    model = torch.nn.ModuleList([cnn, wrapper])
    checkpointer = SafeCheckpointer(tmp_path, {"model": model, "normalize": normalize})
    good = checkpointer.save_checkpoint(meta={"loss": 2.0})
    torch.nn.init.constant_(cnn.weight, 2.0)
    best = checkpointer.save_checkpoint(meta={"loss": 1.0})
    (best.path / "model.ckpt").write_bytes(b"truncated by a crash")

    cnn, wrapper, normalize = modules(0.0)
    with caplog.at_level(logging.WARNING):
        loaded = load_bestrq_encoder(str(tmp_path), cnn, wrapper, normalize)
    assert loaded == str(good.path)
    assert cnn.weight.item() == 1.0
    assert str(best.path) in caplog.text
