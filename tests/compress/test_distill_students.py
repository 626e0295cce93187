"""Student builders: layer selection reproduces the teacher's blocks; impossible mappings fail clearly."""

import pytest
import torch

from lowcarb.compress.distill.capture import trace
from lowcarb.compress.distill.students import StudentConfig, build_student, select_layers
from tests.compress.test_distill_losses import batch, tiny_bert


def test_layer_selected_student_reproduces_the_selected_teacher_layers_at_init():
    teacher = tiny_bert(layers=6)
    student, summary = select_layers(teacher, num_layers=3)
    assert summary.teacher_layers == (1, 3, 5)
    assert student.config.num_hidden_layers == 3 and teacher.config.num_hidden_layers == 6
    ids, mask = batch()
    calls = {}  # teacher block index -> the (args, kwargs) it was called with
    hooks = [
        block.register_forward_pre_hook(
            lambda _m, args, kwargs, j=j: calls.__setitem__(j, (args, kwargs)), with_kwargs=True
        )
        for j, block in enumerate(teacher.bert.encoder.layer)
    ]
    with trace(teacher) as tt, trace(student) as ts:
        teacher(input_ids=ids, attention_mask=mask)
        student(input_ids=ids, attention_mask=mask)
    for hook in hooks:
        hook.remove()
    assert torch.equal(ts.hidden[0], tt.hidden[0])  # same embeddings
    for i, j in enumerate(summary.teacher_layers):
        # Student block i on teacher block j's input gives teacher block j's output.
        args, kwargs = calls[j]
        out = student.bert.encoder.layer[i](*args, **kwargs)
        out = out[0] if isinstance(out, tuple) else out
        assert torch.allclose(out, tt.hidden[j + 1], atol=1e-6)
    # Inside the student, block 0 (teacher block 1) reads the embeddings, not teacher block 0's
    # output, so the student's hidden states do differ from the teacher's: the test can fail.
    assert not torch.allclose(ts.hidden[1], tt.hidden[2], atol=1e-3)
    # The blocks are copies: training the student leaves the teacher alone.
    assert (
        student.bert.encoder.layer[0].output.dense.weight
        is not teacher.bert.encoder.layer[1].output.dense.weight
    )
    assert summary.params_after < summary.params_before


def test_selecting_every_layer_in_order_reproduces_the_teacher():
    teacher = tiny_bert(layers=3)
    student, _ = select_layers(teacher, (0, 1, 2))
    ids, mask = batch()
    assert torch.allclose(
        student(input_ids=ids, attention_mask=mask).logits,
        teacher(input_ids=ids, attention_mask=mask).logits,
        atol=1e-6,
    )


def test_bottom_layers_reproduce_the_teacher_hidden_states():
    teacher = tiny_bert(layers=4)
    student, _ = select_layers(teacher, (0, 1))
    ids, mask = batch()
    with trace(teacher) as tt, trace(student) as ts:
        teacher(input_ids=ids, attention_mask=mask)
        student(input_ids=ids, attention_mask=mask)
    for k in range(3):
        assert torch.allclose(ts.hidden[k], tt.hidden[k], atol=1e-6)


@pytest.mark.parametrize(
    "layers, num_layers, message",
    [
        ((0, 1, 2, 3, 4), None, "more layers than its teacher"),
        (None, 5, "more .*layers"),
        ((0, 4), None, r"layers \[4\] do not exist"),
        ((1, 1), None, "twice"),
        ((), None, "empty"),
        (None, None, "num_layers"),
    ],
)
def test_impossible_layer_selections_give_clear_errors(layers, num_layers, message):
    with pytest.raises(ValueError, match=message):
        select_layers(tiny_bert(layers=4), layers, num_layers=num_layers)


def test_truncated_student_copies_the_leading_slices_of_the_teacher():
    teacher = tiny_bert(layers=4, width=32, heads=4)
    student, summary = build_student(
        teacher, StudentConfig(num_layers=2, hidden_size=16, num_heads=2, intermediate_size=24)
    )
    assert summary.teacher_layers == (1, 3)
    assert student.config.hidden_size == 16 and student.config.num_attention_heads == 2
    t_layer = teacher.bert.encoder.layer[3]
    s_layer = student.bert.encoder.layer[1]
    assert torch.equal(
        s_layer.attention.self.query.weight, t_layer.attention.self.query.weight[:16, :16]
    )
    assert torch.equal(
        s_layer.intermediate.dense.weight, t_layer.intermediate.dense.weight[:24, :16]
    )
    assert torch.equal(
        student.bert.embeddings.word_embeddings.weight,
        teacher.bert.embeddings.word_embeddings.weight[:, :16],
    )
    ids, mask = batch()
    assert student(input_ids=ids, attention_mask=mask).logits.shape == (3, 3)


def test_fresh_student_is_not_a_copy_and_is_seeded():
    teacher = tiny_bert(layers=4)
    a, _ = build_student(teacher, StudentConfig(num_layers=2, init="fresh", seed=3))
    b, _ = build_student(teacher, StudentConfig(num_layers=2, init="fresh", seed=3))
    wa = a.bert.encoder.layer[0].attention.self.query.weight
    assert torch.equal(wa, b.bert.encoder.layer[0].attention.self.query.weight)
    assert not torch.equal(wa, teacher.bert.encoder.layer[1].attention.self.query.weight)


@pytest.mark.parametrize(
    "config, message",
    [
        (StudentConfig(hidden_size=30, num_heads=4), "not divisible by 4 heads"),
        (StudentConfig(num_layers=6), "more layers than its teacher"),
        (StudentConfig(hidden_size=64, num_heads=4), "init='fresh'"),
        (StudentConfig(intermediate_size=128), "init='fresh'"),
    ],
)
def test_impossible_student_configs_give_clear_errors(config, message):
    with pytest.raises(ValueError, match=message):
        build_student(tiny_bert(layers=4, width=32, heads=4), config)


def test_build_student_rejects_non_hugging_face_teachers():
    with pytest.raises(ValueError, match="select_layers"):
        build_student(torch.nn.Linear(2, 2), StudentConfig(num_layers=1))


def reference_transformer(layers: int = 4):
    from lowcarb.models import TextTransformer

    torch.manual_seed(0)
    return TextTransformer(
        60, 3, d_model=32, num_layers=layers, num_heads=4, ffn_dim=64, dropout=0.0
    ).eval()


def test_reference_transformer_layer_selection_and_smaller_student():
    teacher = reference_transformer(layers=4)
    ids, mask = batch()
    student, summary = select_layers(teacher, (0, 1, 2, 3))
    assert torch.allclose(student(ids, mask), teacher(ids, mask), atol=1e-6)
    student, summary = select_layers(teacher, num_layers=2)
    assert student.encoder.num_layers == 2 and len(student.encoder.layers) == 2
    assert student(ids, mask).shape == (3, 3)
    small, _ = build_student(
        teacher, StudentConfig(num_layers=2, hidden_size=16, num_heads=2, intermediate_size=32)
    )
    q_teacher = teacher.encoder.layers[3].self_attn.in_proj_weight
    q_student = small.encoder.layers[1].self_attn.in_proj_weight
    # Q, K and V are truncated separately: the student's K rows are the teacher's K rows.
    assert torch.equal(q_student[16:32], q_teacher[32:48, :16])
    assert small(ids, mask).shape == (3, 3)


def test_select_layers_on_a_gpt2_decoder_keeps_transformer_h_blocks():
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    teacher = GPT2LMHeadModel(GPT2Config(vocab_size=50, n_positions=16, n_embd=16, n_layer=4, n_head=2)).eval()
    student, summary = select_layers(teacher, (0, 3))
    assert summary.teacher_layers == (0, 3) and len(student.transformer.h) == 2
    assert student.config.n_layer == 2
    assert torch.equal(student.transformer.h[1].mlp.c_fc.weight, teacher.transformer.h[3].mlp.c_fc.weight)
    ids = torch.tensor([[1, 2, 3, 4]])
    assert student(input_ids=ids).logits.shape == (1, 4, 50)


def test_select_layers_keeps_per_block_attention_types_and_the_student_saves(tmp_path):
    # Qwen2-style configs list each block's attention type; the kept blocks keep theirs, and
    # save_pretrained validates num_hidden_layers against that list
    from transformers import AutoModelForCausalLM, Qwen2Config, Qwen2ForCausalLM

    types = ["full_attention", "sliding_attention", "full_attention", "sliding_attention"]
    config = Qwen2Config(vocab_size=50, hidden_size=16, intermediate_size=32, num_hidden_layers=4,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=32,
                         layer_types=types, use_sliding_window=True, sliding_window=8)  # fmt: skip
    torch.manual_seed(0)
    teacher = Qwen2ForCausalLM(config).eval()
    student, _ = select_layers(teacher, (1, 2))
    assert student.config.num_hidden_layers == 2
    assert student.config.layer_types == ["sliding_attention", "full_attention"]
    student.save_pretrained(tmp_path / "s")
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "s").eval()
    ids = torch.tensor([[1, 2, 3, 4, 5]])
    with torch.no_grad():
        assert torch.allclose(reloaded(input_ids=ids).logits, student(input_ids=ids).logits, atol=1e-6)
