"""Recipe validation: errors name the file and the field; overrides follow YAML scalar rules."""

from pathlib import Path

import pytest

from lowcarb.errors import ConfigError
from lowcarb.pipeline.recipe import (
    default_recipe_path,
    load_recipe,
    parse_override,
    recipe_from_dict,
)

REPO = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text(text)
    return path


def test_packaged_default_is_digits_cnn_train_evaluate_quantize():
    recipe = load_recipe(None)
    assert recipe.source == "<packaged default>"
    assert recipe.model.name == "cnn" and recipe.data.train is None
    assert [s.name for s in recipe.stages] == ["train", "evaluate", "quantize"]
    # The copy in recipes/ must not drift from the packaged one.
    assert (REPO / "recipes" / "default-digits.yaml").read_text() == default_recipe_path().read_text()


def test_text_recipe_needs_a_table_and_takes_one_with_set(tmp_path):
    path = REPO / "recipes" / "text-classification.yaml"
    with pytest.raises(ValueError, match=r"text-classification.yaml: data.train: .*--set data.train"):
        load_recipe(path)
    table = tmp_path / "t.csv"
    recipe = load_recipe(path, [f"data.train={table}", "train.epochs=1"])
    assert recipe.model.name == "minilm"
    assert recipe.data.train == str(table) and recipe.train.epochs == 1
    assert recipe.train.lr == pytest.approx(1e-4) and recipe.train.head_lr == pytest.approx(3e-3)


def test_typo_names_file_field_and_suggestion(tmp_path):
    path = write(tmp_path, "train:\n  epochz: 2\n")
    with pytest.raises(ValueError) as err:
        load_recipe(path)
    msg = str(err.value)
    assert msg.startswith(f"{path}: train.epochz: unknown field")
    assert "did you mean 'epochs'" in msg and "batch_size" in msg


def test_wrong_type_names_field_and_value(tmp_path):
    path = write(tmp_path, "train:\n  epochs: two\n")
    with pytest.raises(ValueError, match=r"recipe.yaml: train.epochs: .*integer.*'two'"):
        load_recipe(path)


def test_config_own_check_becomes_a_field_error(tmp_path):
    path = write(tmp_path, "train:\n  epochs: 0\n")
    with pytest.raises(ValueError, match=r"recipe.yaml: train: train.epochs must be >= 1"):
        load_recipe(path)


def test_unknown_top_level_key(tmp_path):
    with pytest.raises(ValueError, match=r"stagse: unknown field \(did you mean 'stages'\?\)"):
        load_recipe(write(tmp_path, "stagse: [train]\n"))


def test_bad_yaml_gives_line(tmp_path):
    with pytest.raises(ValueError, match=r"recipe.yaml: not valid YAML \(line 3, column 2\)"):
        load_recipe(write(tmp_path, "train:\n  epochs: 1\n bad: indent\n"))


def test_not_a_mapping_and_missing_file(tmp_path):
    with pytest.raises(ValueError, match="a recipe is a mapping"):
        load_recipe(write(tmp_path, "- train\n"))
    with pytest.raises(ValueError, match="recipe file not found"):
        load_recipe(tmp_path / "nope.yaml")


def test_unknown_stage_lists_known_and_suggests(tmp_path):
    with pytest.raises(ValueError) as err:
        load_recipe(write(tmp_path, "stages: [trian, evaluate]\n"))
    msg = str(err.value)
    assert "stages[0]: unknown stage 'trian' (did you mean 'train'?)" in msg
    assert "evaluate" in msg


def test_stage_settings_validated_by_the_stage_model(tmp_path):
    path = write(tmp_path, "stages:\n  - train: {epochs: 2, lr: fast}\n")
    with pytest.raises(ValueError, match=r"stages\[0\].train.lr: .*number.*'fast'"):
        load_recipe(path)
    path = write(tmp_path, "stages:\n  - evaluate: {split: dev}\n")
    with pytest.raises(ValueError, match=r"stages\[0\].evaluate.split: unknown field.*'splits'"):
        load_recipe(path)


def test_stage_forms_and_labels():
    recipe = recipe_from_dict(
        {"stages": ["train", {"evaluate": None}, {"stage": "train", "epochs": 2}, "evaluate"]}
    )
    assert [s.label for s in recipe.stages] == ["train", "evaluate", "train-2", "evaluate-2"]
    assert recipe.stages[2].config.epochs == 2
    with pytest.raises(ValueError, match="stages: the list is empty"):
        recipe_from_dict({"stages": []})
    with pytest.raises(ValueError, match=r"stages\[0\]: write a stage as a name"):
        recipe_from_dict({"stages": [{"a": 1, "b": 2}]})


@pytest.mark.parametrize(
    "text, keys, value",
    [
        ("train.epochs=2", ["train", "epochs"], 2),
        ("train.lr=0.001", ["train", "lr"], 0.001),
        ("data.train=path/x.csv", ["data", "train"], "path/x.csv"),
        ("train.max_steps=null", ["train", "max_steps"], None),
        ("model.channels=[8, 16]", ["model", "channels"], [8, 16]),
        ("train.restore_best=false", ["train", "restore_best"], False),
        ("name=a=b", ["name"], "a=b"),
    ],
)
def test_parse_override_uses_yaml_scalars(text, keys, value):
    assert parse_override(text) == (keys, value)


def test_parse_override_errors():
    with pytest.raises(ValueError, match="--set expects key.path=value"):
        parse_override("train.epochs")
    with pytest.raises(ValueError, match="empty part"):
        parse_override("train..epochs=1")


def test_overrides_apply_and_are_validated():
    recipe = recipe_from_dict(
        {"stages": ["train", "evaluate"]},
        overrides=["train.epochs=3", "train.lr=1e-4", "stages.train.max_steps=5",
                   "stages.1.evaluate.inferences=64", "model.channels=[4, 8]"],
    )
    assert recipe.train.epochs == 3
    assert recipe.train.lr == pytest.approx(1e-4)  # YAML 1.1 reads 1e-4 as a string
    assert recipe.stages[0].config.max_steps == 5
    assert recipe.stages[1].config.inferences == 64
    assert recipe.model.channels == (4, 8)
    with pytest.raises(ValueError, match=r"train.epochz: unknown field.*\[from --set\]"):
        recipe_from_dict({}, overrides=["train.epochz=3"])
    with pytest.raises(ValueError, match="no stage named 'lowrank'"):
        recipe_from_dict({}, overrides=["stages.lowrank.param_ratio=0.5"])
    with pytest.raises(ValueError, match="index 5 is out of range"):
        recipe_from_dict({}, overrides=["stages.5.epochs=1"])
    with pytest.raises(ValueError, match="is a value"):
        recipe_from_dict({"name": "n"}, overrides=["name.x=1"])


def test_round_trip_through_dict():
    recipe = load_recipe(None, ["train.epochs=2", "stages.train.max_steps=4"])
    again = recipe_from_dict(recipe.to_dict(), source="stored")
    assert again.to_dict() == recipe.to_dict()


def test_device_and_precision_are_top_level_fields_checked_at_load(tmp_path):
    recipe = recipe_from_dict({"device": " CUDA:1 ", "precision": "BF16"})
    assert recipe.device == "cuda:1" and recipe.precision == "bf16"  # checked, not resolved
    assert recipe_from_dict({}).device is None  # unset: the environment, else auto
    again = recipe_from_dict(recipe.to_dict(), source="stored")
    assert again.to_dict() == recipe.to_dict() and again.device == "cuda:1"
    with pytest.raises(ValueError, match=r"device: 'gpu' is not a device; use auto, cpu, cuda or cuda:N"):
        load_recipe(write(tmp_path, "device: gpu\n"))
    with pytest.raises(ValueError, match=r"precision: 'fp8' is not a precision.*\[from --set\]"):
        load_recipe(None, ["precision=fp8"])


def test_precision_inside_train_points_to_the_top_level(tmp_path):
    from lowcarb.errors import ConfigError

    with pytest.raises(ConfigError, match=r"train.precision: precision is set at the top level"):
        load_recipe(write(tmp_path, "train:\n  precision: bf16\n"))


# --- hostile recipes (issue 19): limits, strict types, one-line errors ------------------------

BILLION_LAUGHS = "\n".join(
    ["name: &a0 lol"]
    + [f"l{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 10)]
    + ["description: *a9"]
)


def test_billion_laughs_is_refused_fast_without_printing_the_value(tmp_path):
    import time

    start = time.perf_counter()
    with pytest.raises(ConfigError) as err:
        load_recipe(write(tmp_path, BILLION_LAUGHS))
    assert time.perf_counter() - start < 2.0
    message = str(err.value)
    assert "aliases" in message and "line " in message
    assert len(message) < 400 and "lol, lol" not in message


def test_small_aliases_still_work(tmp_path):
    recipe = load_recipe(write(tmp_path, "train: {lr: &lr 3.0e-4}\nstages:\n  - train: {lr: *lr}\n"))
    assert recipe.stages[0].config.lr == pytest.approx(3e-4)


def test_recursive_alias_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="refers to itself"):
        load_recipe(write(tmp_path, "description: &a [1, *a]\n"))


@pytest.mark.parametrize("opener, closer", [("[", "]"), ("{a: ", "}")])
def test_deep_nesting_is_one_line_not_a_recursion_error(tmp_path, opener, closer):
    depth = 5000
    with pytest.raises(ConfigError) as err:
        load_recipe(write(tmp_path, "description: " + opener * depth + "1" + closer * depth + "\n"))
    assert "nested more than" in str(err.value) and "\n" not in str(err.value)


def test_oversized_file_is_refused_before_reading(tmp_path):
    path = write(tmp_path, "description: '" + "x" * (2 << 20) + "'\n")
    with pytest.raises(ConfigError, match=r"recipe.yaml: the file is .* MB; a recipe is at most 1 MB"):
        load_recipe(path)


def test_duplicate_keys_are_refused_with_their_line(tmp_path):
    with pytest.raises(ConfigError, match=r"recipe.yaml: not valid YAML \(line 3, column 3\): key 'epochs' appears twice \(first on line 2\)"):
        load_recipe(write(tmp_path, "train:\n  epochs: 1\n  epochs: 5\n"))
    with pytest.raises(ConfigError, match="key 'train' appears twice"):
        load_recipe(write(tmp_path, "train: {}\ntrain: {}\n"))


def test_merge_keys_are_not_duplicates(tmp_path):
    path = write(tmp_path, "train: &t {epochs: 1, lr: 1.0e-3}\nstages:\n  - train: {<<: *t, epochs: 2}\n")
    recipe = load_recipe(path)
    assert recipe.stages[0].config.epochs == 2


@pytest.mark.parametrize(
    "line, expected",
    [
        ("train: {epochs: 1e20}", r"train.epochs: expected an integer \(a whole number\), got 1e\+20"),
        ("train: {epochs: true}", r"train.epochs: expected an integer .*got True"),
        ("train: {epochs: 2.5}", r"train.epochs: expected an integer"),
        ("train: {restore_best: 1}", r"train.restore_best: expected true or false, got 1"),
        ("train: {lr: .inf}", r"train.lr: expected a finite number, got inf"),
        ("train: {lr: .nan}", r"train.lr: expected a finite number, got nan"),
        ("train: {lr: true}", r"train.lr: expected a number, got True"),
        ("threads: yes", r"threads: expected an integer"),
        ("model: {channels: [8, 2.5]}", r"model.channels\[1\]: expected an integer"),
        ("evaluation: {latency_batch_sizes: [0, -1]}", r"evaluation.latency_batch_sizes\[0\]: .*greater than 0"),
        ("evaluation: {latency_batch_sizes: []}", r"evaluation.latency_batch_sizes: .*at least 1"),
        ("evaluation: {inferences: 1.0e+3}", r"evaluation.inferences: expected an integer"),
        ("stages: [{train: {epochs: false}}]", r"stages\[0\].train.epochs: expected an integer"),
    ],
)
def test_values_of_the_wrong_kind_are_refused_at_load(tmp_path, line, expected):
    with pytest.raises(ConfigError, match=expected):
        load_recipe(write(tmp_path, line + "\n"))


def test_exponent_floats_read_as_numbers(tmp_path):
    recipe = load_recipe(write(tmp_path, "train: {lr: 3e-4, weight_decay: 1E-2}\n"), ["train.warmup_ratio=5e-2"])
    assert recipe.train.lr == pytest.approx(3e-4) and recipe.train.weight_decay == pytest.approx(1e-2)
    assert recipe.train.warmup_ratio == pytest.approx(0.05)
    assert parse_override("train.lr=1e-3") == (["train", "lr"], 1e-3)


def test_empty_value_from_set_is_one_line_without_pydantic_internals():
    with pytest.raises(ConfigError) as err:
        load_recipe(None, ["model.name="])
    message = str(err.value)
    assert message.startswith("<packaged default>: model.name: ")
    assert "lax-or-strict" not in message and "function-after" not in message and "[from --set]" in message
    assert message.count("model.name") == 1


def test_huge_values_are_shortened_in_messages(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_recipe(write(tmp_path, "train: {epochs: [" + ", ".join(["1"] * 5000) + "]}\n"))
    assert len(str(err.value)) < 300


def test_set_values_have_the_same_limits():
    value = "[" * 200 + "]" * 200
    with pytest.raises(ConfigError, match="nested more than"):
        parse_override("description=" + value)


def test_data_paths_resolve_against_the_recipe_folder(tmp_path, monkeypatch):
    folder = tmp_path / "project" / "recipes"
    folder.mkdir(parents=True)
    path = folder / "r.yaml"
    path.write_text("model: {name: transformer}\ndata: {train: ../data/train.csv, dev: /abs/dev.csv}\n")
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    recipe = load_recipe(path)
    assert Path(recipe.data.train) == folder / ".." / "data" / "train.csv"
    assert recipe.data.dev == "/abs/dev.csv"
    # --set paths are the user's, typed relative to where they stand.
    recipe = load_recipe(path, ["data.train=mine.csv"])
    assert recipe.data.train == "mine.csv"


def test_special_files_are_not_read_as_recipes():
    with pytest.raises(ConfigError, match="not a regular file"):
        load_recipe("/dev/zero")


def test_a_verb_built_around_one_stage_reads_data_paths_from_the_recipe_folder(tmp_path, monkeypatch):
    from lowcarb.pipeline.stage_recipe import recipe_with_stage

    folder = tmp_path / "recipes"
    folder.mkdir()
    path = folder / "r.yaml"
    path.write_text("model: {name: transformer}\ndata: {train: train.csv}\n")
    monkeypatch.chdir(tmp_path)
    recipe = recipe_with_stage(path, "evaluate")
    assert Path(recipe.data.train) == folder / "train.csv"


@pytest.mark.parametrize("path", sorted((REPO / "recipes").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_recipe_validates_with_only_the_data_paths_set(tmp_path, path):
    # The shipped defaults are what a user runs with nothing but the data paths changed.
    sets = [] if "digits" in path.name else [f"data.train={tmp_path / 'train.csv'}"]
    recipe = load_recipe(path, sets)
    assert recipe.stages
    if recipe.train.head_lr is not None:  # a fresh head's lr is above the body's, never below
        assert recipe.train.head_lr > recipe.train.lr


_SEARCH = {
    "objectives": [{"metric": "accuracy", "direction": "maximize"}],
    "params": {"train.lr": {"float": [1e-4, 1e-2], "log": True}},
}
_MUTRANSFER = {"text": "a.txt", "model": {"base_width": 8}, "proxy_width": 8, "target_width": 16,
               "log2_lrs": [-3]}


@pytest.mark.parametrize(
    ("section", "expected"),
    [
        ({"parsec": {"sapce": "cnn"}}, "parsec.sapce: unknown field (did you mean 'space'?)"),
        ({"search": {**_SEARCH, "n_trails": 3}},
         "search.n_trails: unknown field (did you mean 'n_trials'?)"),
        ({"search": {**_SEARCH, "objectives": [{"metirc": "accuracy", "direction": "maximize"}]}},
         "search.objectives[0].metirc: unknown field (did you mean 'metric'?)"),
        ({"search": {**_SEARCH, "params": {"train.lr": {"flaot": [1e-4, 1e-2]}}}},
         "unknown field (did you mean 'float'?); allowed: float, int, choices"),
        ({"search": {**_SEARCH, "pruning": {"warmup_step": 2}}},
         "search.pruning.warmup_step: unknown field (did you mean 'warmup_steps'?)"),
        ({"mutransfer": {**_MUTRANSFER, "proxy_widht": 8}},
         "mutransfer.proxy_widht: unknown field (did you mean 'proxy_width'?)"),
        ({"mutransfer": {**_MUTRANSFER, "model": {"base_widht": 8}}},
         "(did you mean 'base_width' for 'base_widht'?)"),
        ({"mutransfer": {**_MUTRANSFER, "train": {"stpes": 3}}},
         "(did you mean 'steps' for 'stpes'?)"),
        ({"evaluation": {"latency_batch_size": [1]}},
         "evaluation.latency_batch_size: unknown field (did you mean 'latency_batch_sizes'?)"),
        ({"stages": ["train", {"quantize": {"mdoe": "dynamic"}}]},
         "stages[1].quantize.mdoe: unknown field (did you mean 'mode'?)"),
        ({"stages": [{"lora": {"alpah": 4}}]},
         "stages[0].lora.alpah: unknown field (did you mean 'alpha'?)"),
    ],
)
def test_typos_in_optional_sections_and_stages_get_a_hint(section, expected):
    with pytest.raises(ConfigError) as err:
        recipe_from_dict({"model": {"name": "mlp"}, **section}, source="r.yaml")
    assert expected in str(err.value)
    assert "\n" not in str(err.value)


def test_evaluation_splits_default_to_dev_and_test_and_reject_other_names():
    assert recipe_from_dict({}).evaluation.splits == ("dev", "test")
    assert recipe_from_dict({"evaluation": {"splits": ["test"]}}).evaluation.splits == ("test",)
    with pytest.raises(ConfigError, match="splits"):
        recipe_from_dict({"evaluation": {"splits": ["train"]}})
    with pytest.raises(ConfigError, match="splits"):
        recipe_from_dict({"evaluation": {"splits": []}})
