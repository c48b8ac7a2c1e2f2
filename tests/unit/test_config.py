"""LoopConfig: validation, coercion, and the CLI flags generated from its metadata."""

from __future__ import annotations

import dataclasses

import pytest

from al_tasks.cli import build_parser, config_from_args
from al_tasks.config import PREFIX_FIELDS, SECTIONS, LoopConfig, settings
from al_tasks.errors import ConfigError
from al_tasks.workspace import TaskWorkspace


def test_every_setting_has_section_title_and_description():
    for info in settings():
        assert info.section in SECTIONS, info.name
        assert info.title and info.description.endswith((".", ")")), info.name


@pytest.mark.parametrize("task", ["..", ".", "../x", "a/b", "", ".hidden", "a b"])
def test_task_names_that_could_leave_the_workspace_are_refused(task):
    with pytest.raises(ConfigError, match="task="):
        LoopConfig(task=task)


def test_every_workspace_path_stays_inside(tmp_path):
    workspace = TaskWorkspace(LoopConfig(workspace=str(tmp_path), task="a.b"))
    assert workspace.root == tmp_path.resolve() / "a.b"
    with pytest.raises(ConfigError, match="outside the workspace"):
        workspace.inside(workspace.root / ".." / ".." / "elsewhere")
    assert workspace.labelled_file_path(1, "../../x.csv") == workspace.round_dir(1) / "labelled" / "x.csv"


def test_labelled_file_names_cannot_escape(tmp_path):
    workspace = TaskWorkspace(LoopConfig(workspace=str(tmp_path), task="t"))
    path = workspace.labelled_file_path(3, "..")
    assert tmp_path.resolve() in path.parents


@pytest.mark.parametrize(
    ("a", "b"),
    [("outbox_prefix", "inbox_prefix"), ("processed_prefix", "inbox_prefix"), ("seed_prefix", "rejects_prefix")],
)
def test_bucket_prefixes_must_be_distinct(a, b):
    with pytest.raises(ConfigError, match="must be distinct"):
        LoopConfig().with_overrides({a: "same", b: "same"})


def test_a_prefix_inside_another_is_refused():
    with pytest.raises(ConfigError, match="none inside another"):
        LoopConfig().with_overrides({"inbox_prefix": "labels", "processed_prefix": "labels/done"})
    assert len(PREFIX_FIELDS) == 5


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("batch_size", "0", "must be > 0"),
        ("strategy", "best", "choose one of"),
        ("target_accuracy", "1.5", "<= 1"),
        ("max_rounds", "1.5", "whole number"),
        ("use_spark_trials", "maybe", "boolean"),
    ],
)
def test_bad_values_name_the_setting(name, value, message):
    with pytest.raises(ConfigError, match=f"{name}.*{message}"):
        LoopConfig().with_overrides({name: value})


def test_environment_then_overrides():
    cfg = LoopConfig.from_env({"AL_BATCH_SIZE": "50", "AL_CLASSES": "a, b,", "AL_USE_SPARK_TRIALS": "yes"})
    assert (cfg.batch_size, cfg.classes, cfg.use_spark_trials) == (50, ("a", "b"), True)
    assert cfg.with_overrides({"batch_size": 7, "round": 3, "strategy": None}).batch_size == 7


def test_binary_task_classes_follow_the_positive_class():
    assert LoopConfig(positive_class="debt_collection").classes == ("debt_collection", "rest")


def test_cli_has_a_flag_for_every_setting_with_its_description():
    parser = build_parser()
    sub = parser._subparsers._group_actions[0].choices["round"]
    flags = {option: action for action in sub._actions for option in action.option_strings}
    for info in settings():
        action = flags[info.flag]
        assert action.dest == f"setting_{info.name}" and action.help.startswith(f"{info.title}: {info.description}")
        shown = ",".join(info.default) if isinstance(info.default, tuple) else repr(info.default)
        assert f"(default {shown or 'empty'})" in action.help or info.default == ""


def test_cli_flags_reach_the_config(monkeypatch):
    args = build_parser().parse_args(
        ["round", "--batch-size", "25", "--corpus", "x.csv", "--set", "seed=3", "--classes", "a,b"]
    )
    cfg = config_from_args(args, environ={"AL_MAX_EVALS": "9"})
    assert (cfg.batch_size, cfg.corpus_path, cfg.seed, cfg.classes, cfg.max_evals) == (25, "x.csv", 3, ("a", "b"), 9)


def test_al_config_lists_every_setting():
    assert set(LoopConfig().as_dict()) == {f.name for f in dataclasses.fields(LoopConfig)}
