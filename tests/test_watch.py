"""SilentDistillationWatch: zero loss terms and all-zero feature maps, several logged steps in a row."""

import pytest
import torch

from kdcore.engine.watch import SilentDistillationWatch

LIVE = torch.tensor([[0.0, 0.5]])
DEAD = torch.zeros(2, 4, 3, 3)


def test_a_zero_loss_warns_once_after_patience_steps_naming_it():
    watch = SilentDistillationWatch(patience=3, losses=["feature-matching"])
    assert watch.observe(10, {"l1": 0.2, "feature-matching": 0.0}) == []
    assert watch.observe(20, {"l1": 0.1, "feature-matching": 0.0}) == []
    [warning] = watch.observe(30, {"l1": 0.1, "feature-matching": 0.0})
    assert "loss 'feature-matching'" in warning and "3 logged steps in a row (steps 10-30)" in warning
    assert watch.observe(40, {"l1": 0.1, "feature-matching": 0.0}) == []  # each once


def test_a_dead_feature_map_warns_naming_its_path():
    watch = SilentDistillationWatch(patience=2)
    assert watch.observe(1, features={"student lowres.fusion": DEAD, "teacher lowres.fusion": LIVE}) == []
    [warning] = watch.observe(2, features={"student lowres.fusion": DEAD, "teacher lowres.fusion": LIVE})
    assert "feature map 'student lowres.fusion' has been all zero" in warning and "train.lr" in warning


def test_a_non_zero_value_breaks_the_streak():
    watch = SilentDistillationWatch(patience=2)
    assert watch.observe(1, {"fm": 0.0}, {"p": DEAD}) == []
    assert watch.observe(2, {"fm": 1e-12}, {"p": LIVE}) == []
    assert watch.observe(3, {"fm": 0.0}, {"p": DEAD}) == []
    assert len(watch.observe(4, {"fm": 0.0}, {"p": DEAD})) == 2


def test_a_step_without_the_name_breaks_the_streak():
    watch = SilentDistillationWatch(patience=2)
    assert watch.observe(1, {"fm": 0.0}) == []
    assert watch.observe(2, {"l1": 0.3}) == []
    assert watch.observe(3, {"fm": 0.0}) == []
    assert watch.observe(4, {"fm": 0.0}) != []


def test_only_the_watched_losses_count():
    watch = SilentDistillationWatch(patience=1, losses=["relative-difference"])
    assert watch.observe(1, {"l1": 0.0}) == []
    assert watch.observe(2, {"relative-difference": 0.0}) != []


def test_a_loss_and_a_path_of_one_name_are_told_apart():
    watch = SilentDistillationWatch(patience=1)
    warnings = watch.observe(1, {"x": 0.0}, {"x": DEAD})
    assert len(warnings) == 2 and warnings[0].startswith("loss 'x'") and warnings[1].startswith("feature map 'x'")


def test_nan_is_not_zero_and_patience_must_be_positive():
    watch = SilentDistillationWatch(patience=1)
    assert watch.observe(1, features={"p": torch.full((1, 2), float("nan"))}) == []
    with pytest.raises(ValueError, match="patience"):
        SilentDistillationWatch(patience=0)
