"""Every technique that builds a model or a module builds it where the model it starts from is.

This machine has no GPU, so the models start on `meta` (shapes, no values): a module built on the
CPU instead shows up as a CPU parameter, and copying real values between meta and CPU tensors
raises. What needs values (SVD ranks, vocabulary maps, mask scores) cannot run on meta; those
paths move their results with `.to(weight.device)`, checked by reading (see the report of task
"device")."""

import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification

from lowcarb.models.transformer import TextTransformer

CONFIG = BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                    intermediate_size=64, num_labels=3)


def bert_on_meta():
    torch.manual_seed(0)
    return BertForSequenceClassification(CONFIG).to("meta")


def devices(model):
    return {t.device.type for t in [*model.parameters(), *model.buffers()]}


def test_lora_adapters_and_the_merged_model_stay_on_the_models_device():
    from lowcarb.adapt import lora

    model = bert_on_meta()
    lora.apply(model, lora.LoraConfig(r=4, target_modules=("query", "value"), modules_to_save=("classifier",)))
    assert devices(model) == {"meta"}
    assert devices(lora.merge_and_unload(model)) == {"meta"}


@pytest.mark.parametrize("init", ["fresh", "truncated"])
def test_a_built_student_lives_where_its_teacher_does(init):
    from lowcarb.compress.distill.students import StudentConfig, build_student

    config = StudentConfig(num_layers=1, hidden_size=16, num_heads=2, intermediate_size=32, init=init)
    student, _ = build_student(bert_on_meta(), config)
    assert devices(student) == {"meta"}
    teacher = TextTransformer(vocab_size=50, num_labels=2, d_model=16, num_layers=2, num_heads=2,
                              ffn_dim=32, max_length=16).to("meta")
    student, _ = build_student(teacher, StudentConfig(num_layers=1, init=init))
    assert devices(student) == {"meta"}


def test_selected_layers_stay_on_the_teachers_device():
    from lowcarb.compress.distill.students import select_layers

    student, _ = select_layers(bert_on_meta(), num_layers=1)
    assert devices(student) == {"meta"}


def test_autodistil_supernet_and_extracted_student_follow_the_teacher():
    from lowcarb.search.autodistil.space import TeacherShape
    from lowcarb.search.autodistil.supernet import Supernet, extract

    teacher = bert_on_meta()
    supernet = Supernet.from_teacher(teacher, TeacherShape.of(teacher).config)
    assert devices(supernet) == {"meta"}
    assert devices(extract(supernet)) == {"meta"}


def test_earlybert_coefficients_follow_the_model():
    from lowcarb.prune import bert_structure

    model = bert_on_meta()
    coefs = bert_structure.attach(model)
    assert devices(coefs) == {"meta"}


def test_calibration_batches_from_a_host_loader_reach_the_models_device():
    """Smoothing and int4 calibration take loader batches (host memory) for a model anywhere."""
    from lowcarb.compress.quantize.smooth import activation_absmax
    from lowcarb.models.surgery import call_args

    batch = {"input_ids": torch.ones(2, 5, dtype=torch.long), "labels": torch.zeros(2, dtype=torch.long)}
    args, kwargs = call_args(batch, torch.device("meta"))
    assert args == () and set(kwargs) == {"input_ids"} and kwargs["input_ids"].is_meta
    model = bert_on_meta()
    amax = activation_absmax(model, ["bert.encoder.layer.0.attention.self.query"], [batch], 1)
    assert amax["bert.encoder.layer.0.attention.self.query"].device.type == "meta"


@pytest.mark.parametrize("kind", ["cnn", "text"])
def test_a_parsec_space_on_a_device_builds_every_architecture_there(kind):
    from lowcarb.search.parsec.space import cnn_space, text_space

    space = cnn_space() if kind == "cnn" else text_space()
    gen = torch.Generator().manual_seed(0)
    for _ in range(3):
        built = space.on("meta").build(space.uniform_sample(gen))
        assert devices(built.model) == {"meta"}
        assert all(devices(part) <= {"meta"} for part in built.parts.values())


def test_searches_get_the_recipes_device(tmp_path, monkeypatch):
    """`lowcarb parsec` and `lowcarb mutransfer` resolve the recipe's device once and hand it to
    the search (here the CPU; a GPU that is not there stops them before any run is stored)."""
    import lowcarb.pipeline.mutransfer_run as mutransfer_run
    import lowcarb.pipeline.parsec_run as parsec_run
    from lowcarb.pipeline import recipe_from_dict

    seen = {}

    class Stop(Exception):
        pass

    def capture(name):
        def fake(*args, **kwargs):
            seen[name] = (kwargs.get("device"), kwargs.get("precision"))
            raise Stop

        return fake

    monkeypatch.setattr(parsec_run, "run_parsec", capture("parsec"))
    monkeypatch.setattr(mutransfer_run, "mutransfer", capture("mutransfer"))
    from lowcarb.store import RunStore

    store = RunStore(tmp_path / "runs.db")
    with pytest.raises(Stop):
        parsec_run.parsec_recipe(recipe_from_dict({"device": "cpu", "precision": "bf16"}),
                                 folder=tmp_path / "p", store=store)
    (tmp_path / "t.txt").write_text("the cat sat on the mat\n" * 40)
    recipe = recipe_from_dict({"device": "cpu", "mutransfer": {
        "text": str(tmp_path / "t.txt"), "model": {"base_width": 8, "n_heads": 2},
        "proxy_width": 8, "target_width": 16, "log2_lrs": [-6]}})
    with pytest.raises(Stop):
        mutransfer_run.mutransfer_recipe(recipe, out_dir=tmp_path / "m", store=store)
    assert seen == {"parsec": (torch.device("cpu"), "bf16"), "mutransfer": (torch.device("cpu"), None)}
