"""Training configs: per-stage batch layout (global batch, micro batch, max length) with
fallbacks, accumulation derived from the world size, VILA's values in the real configs, AdamW
betas, and one clear line for wrong value types."""
import pytest
import yaml

from vilactl.base.errors import VilactlError
from vilactl.train import config, overrides
from vilactl.train.loop import check_layout

BASE = {"model": {"llm_config": {"model_type": "llama"}}}


def cfg(**sections):
    return config.from_dict({**BASE, **sections}, "t.yaml")


def test_stage_values_fall_back_to_the_top_level():
    c = cfg(data={"max_length": 512}, train={"micro_batch_size": 4, "global_batch": 32},
            stages={"pretrain": {"global_batch": 64, "max_length": 1024},
                    "sft": {"micro_batch_size": 2}})
    assert config.layout(c, "projector", 2) == config.Layout(4, 4, 2, 512)
    assert config.layout(c, "pretrain", 2) == config.Layout(4, 8, 2, 1024)
    assert config.layout(c, "sft", 4) == config.Layout(2, 4, 4, 512)
    assert config.layout(c, "pretrain", 2).global_batch == 64
    # without a global batch, the accumulation is the config's (the debug config's way)
    plain = cfg(train={"micro_batch_size": 8, "grad_accum": 3})
    assert config.layout(plain, "sft", 2) == config.Layout(8, 3, 2, 2048)


def test_a_global_batch_that_does_not_split_is_refused():
    c = cfg(train={"micro_batch_size": 4}, stages={"sft": {"global_batch": 24}})
    assert config.layout(c, "sft", 3).grad_accum == 2
    with pytest.raises(VilactlError, match=r"stages.sft.global_batch 24 is not a multiple of "
                                           r"micro_batch_size 4 × 4 rank\(s\)"):
        config.layout(c, "sft", 4)
    with pytest.raises(VilactlError, match="set train.global_batch or train.grad_accum"):
        cfg(train={"global_batch": 8, "grad_accum": 2})


@pytest.mark.parametrize("name", ["vila-7b", "vila-13b"])
def test_real_configs_carry_vila_batches_and_lengths(name):
    c = config.load(name)
    want = {"projector": (256, 2048), "pretrain": (1024, 4096), "sft": (128, 4096)}
    for stage, (batch, length) in want.items():
        for world in (8, 128):           # one node of 8 GPUs up to the paper's 16 nodes
            lay = config.layout(c, stage, world)
            assert (lay.global_batch, lay.max_length) == (batch, length)
    assert c.train.betas == [0.9, 0.999] and c.train.strategy == "fsdp"


def test_debug_config_keeps_its_batch_and_default_betas():
    c = config.load("debug")
    assert config.layout(c, "pretrain", 1) == config.Layout(8, 1, 1, 384)
    assert c.train.betas == [0.9, 0.999] and config.LoopCfg().betas == [0.9, 0.999]


@pytest.mark.parametrize("sections, message", [
    ({"stages": {"sft": {"global_batch": "big"}}}, "stages.sft.global_batch must be an integer"),
    ({"stages": {"pretrain": {"max_length": 4096.5}}}, "stages.pretrain.max_length must be an "
                                                       "integer"),
    ({"stages": {"projector": {"micro_batch_size": True}}}, "micro_batch_size must be an "
                                                            "integer, got True"),
    ({"stages": {"sft": {"micro_batch_size": 0}}}, "must be a positive integer, got 0"),
    ({"train": {"global_batch": [256]}}, "train.global_batch must be an integer"),
    ({"train": {"betas": [0.9, "x"]}},
     "train.betas must be a list of items that are each a number, got [0.9, 'x']"),
    ({"train": {"betas": [0.9, 1.5]}}, "train.betas must be two numbers in [0, 1)"),
    ({"data": {"workers": -1}}, "data.workers must be ≥ 0"),
    ({"data": {"packing": "yes"}}, "data.packing must be true or false"),
    ({"train": {"strategy": "zero3"}}, "train.strategy must be auto, ddp or fsdp"),
    ({"stages": {"sft": [1]}}, "stages.sft must be a mapping"),
])
def test_wrong_value_types_are_one_line(sections, message):
    with pytest.raises(VilactlError) as e:
        cfg(**sections)
    assert message in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("text, message", [
    ("stages: {pretrain: {lr: -0.5}}", "stages.pretrain.lr must be a number > 0, got -0.5"),
    ("stages: {pretrain: {lr: .nan}}", "stages.pretrain.lr must be a finite number, got nan"),
    ("stages: {sft: {lr: 1e400}}", "stages.sft.lr must be a finite number, got inf"),
    ("train: {weight_decay: -1.0e-2}", "train.weight_decay must be a number ≥ 0"),
    ("train: {warmup_ratio: 2}", "train.warmup_ratio must be a number in [0, 1], got 2"),
    ("train: {max_grad_norm: 0}", "train.max_grad_norm must be a number > 0, got 0"),
    ("train: {max_grad_norm: -.inf}", "train.max_grad_norm must be a finite number"),
    ("train: {betas: [0.9, .nan]}", "train.betas must be a list of finite numbers"),
    ("train: {seed: 99999999999999999999}", "train.seed must be an integer within int64"),
    ("train: {seed: -1}", "train.seed must be a number ≥ 0, got -1"),
    ("train: {save_every: -2}", "train.save_every must be a number ≥ 0"),
    ("train: {micro_batch_size: 100000000000000000000}", "an integer within int64"),
    ("stages: {sft: {steps: -3}}", "stages.sft.steps must be a positive integer, got -3"),
    ("stages: {sft: {lora: -8}}", "stages.sft.lora must be a number ≥ 0, got -8"),
])
def test_numbers_out_of_range_name_the_file_and_field(tmp_path, text, message):
    path = tmp_path / "c.yaml"
    path.write_text("model: {llm_config: {model_type: llama}}\n" + text + "\n")
    with pytest.raises(VilactlError) as e:
        config.load(path)
    assert str(e.value).startswith(f"{path}: ") and message in str(e.value), str(e.value)
    assert "\n" not in str(e.value)


def test_yaml_exponent_without_dot_is_a_number(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({**BASE, "stages": {"sft": {"lr": "1e-3"}}}))
    assert config.load(path).stages["sft"].lr == 1e-3


def test_resume_layout_check_names_what_changed(tmp_path):
    saved = {"layout": {"world": 2, "grad_accum": 1, "micro_batch_size": 2, "max_length": 192}}
    same = dict(saved["layout"])
    check_layout(saved, same, tmp_path)
    with pytest.raises(VilactlError, match=r"batch layout changed \(world 2 → 1, grad_accum 1 "
                                           r"→ 2\)"):
        check_layout(saved, {**same, "world": 1, "grad_accum": 2}, tmp_path)


def test_config_files_that_are_not_small_regular_files_are_refused(tmp_path):
    """A wrong --config path (a device, a dataset, a nested-bracket bomb) is one line, read in
    bounded memory: /dev/zero was read until the kernel killed the process."""
    with pytest.raises(VilactlError, match="/dev/zero: not a regular file"):
        config.load("/dev/zero")
    big = tmp_path / "big.yaml"
    big.write_text("# " + "x" * config.MAX_CONFIG_BYTES + "\n")
    with pytest.raises(VilactlError, match="a config is at most 1048576 bytes"):
        config.load(big)
    deep = tmp_path / "deep.yaml"
    deep.write_text("train: " + "[" * 50000 + "]" * 50000 + "\n")
    with pytest.raises(VilactlError, match="deep.yaml: not valid YAML"):
        config.load(deep)


def test_set_overrides_apply_in_order_and_are_recorded():
    c = config.load("debug", ["stages.sft.lr=1e-4", "train.warmup_ratio=0.1",
                              "train.betas=[0.9, 0.95]", "model.llm_config.hidden_size=96",
                              "stages.sft.lr=3e-5", "data.packing=false"])
    plain = config.load("debug")
    assert c.stages["sft"].lr == 3e-5 and c.stages["pretrain"] == plain.stages["pretrain"]
    assert (c.train.warmup_ratio, c.train.betas, c.data.packing) == (0.1, [0.9, 0.95], False)
    assert c.model.llm_config["hidden_size"] == 96
    assert c.source.endswith("debug.yaml") and c.overrides[0] == "stages.sft.lr=1e-4"
    assert plain.overrides == [] and plain.train.warmup_ratio != 0.1


def test_set_value_is_read_as_yaml():
    parse = overrides.parse
    assert parse("train.seed=7") == (["train", "seed"], 7)
    assert parse("stages.sft.blend = my_blend") == (["stages", "sft", "blend"], "my_blend")
    assert parse("train.global_batch=") == (["train", "global_batch"], None)
    assert parse("model.llm=a=b") == (["model", "llm"], "a=b")      # the first = splits


@pytest.mark.parametrize("item, message", [
    ("train.lr=1e-4", "--set train.lr=1e-4: unknown key train.lr (known in train: betas, "
                      "global_batch, grad_accum, gradient_checkpointing, log_every, "
                      "max_grad_norm, micro_batch_size, save_every, seed, strategy, "
                      "warmup_ratio, weight_decay); lr is per stage: stages.<stage>.lr"),
    ("optim.lr=1", "--set optim.lr=1: unknown key 'optim' (known: data, model, stages, train)"),
    ("stages.finetune.lr=1", "per-stage keys are stages.<stage>.<key> with a stage of "
                             "projector, pretrain, sft"),
    ("train=1", "--set train=1: name a key inside train"),
    ("train.seed.x=1", "train.seed is not a mapping"),
    ("lr", "--set takes KEY=VALUE (e.g. stages.sft.lr=1e-5 or train.warmup_ratio=0.1), got 'lr'"),
    ("train..seed=1", "--set takes KEY=VALUE"),
    ("train.betas=[0.9", "--set train.betas=[0.9: VALUE is not a YAML value"),
    ("train.betas=" + "[" * 5000, "VALUE is not a YAML value"),
    ("train.seed=abc", "--set train.seed=abc: train.seed must be an integer, got 'abc'"),
    ("data.packing=maybe", "data.packing must be true or false, got 'maybe'"),
    ("train.warmup_ratio=2", "--set train.warmup_ratio=2: train.warmup_ratio must be a number "
                             "in [0, 1], got 2"),
    ("stages.sft.steps=0", "stages.sft.steps must be a positive integer, got 0"),
    ("stages.pretrain.lr=-1e-3", "stages.pretrain.lr must be a number > 0, got -0.001"),
    ("train.strategy=zero3", "--set train.strategy=zero3: train.strategy must be auto, ddp or "
                             "fsdp"),
    ("train.global_batch=16", "--set train.global_batch=16: set train.global_batch or "
                              "train.grad_accum, not both"),       # debug.yaml sets grad_accum
])
def test_bad_set_overrides_are_one_line_naming_the_override(item, message):
    with pytest.raises(VilactlError) as e:
        config.load("debug", [item])
    assert message in str(e.value) and "\n" not in str(e.value), str(e.value)


def test_set_checks_the_batch_layout_like_the_file():
    c = config.load("vila-7b", ["stages.sft.global_batch=96"])
    assert config.layout(c, "sft", 8).global_batch == 96
    with pytest.raises(VilactlError, match="stages.sft.global_batch 100 is not a multiple"):
        config.layout(config.load("vila-7b", ["stages.sft.global_batch=100"]), "sft", 8)
