"""The typed config schema (issue 13): types, ranges, enums, finite numbers, list items and
lengths, strict keys, descriptions; the same checks for --set strings, YAML files, ROS parameter
files, dicts (the node's set-parameters callback), direct construction and assignment."""

from __future__ import annotations

import dataclasses
import math

import pytest
from spatia_core.config import MemoryConfig, SimConfig, SpatiaConfig, WorldConfig, parameter_specs
from spatia_core.errors import InputError


@pytest.mark.parametrize("override,names", [
    ("camera.intrinsics=[a,b,c,d]", "camera.intrinsics[0]"), ("sim.mount_xyz=abc", "sim.mount_xyz"),
    ("world.source=nonsense", "world.source"), ("update.depth=bogus", "update.depth"), ("render.near=-1", "render.near"),
    ("memory.block_size=0", "memory.block_size"), ("retrieval.epsilon=5", "retrieval.epsilon"),
    ("memory.voxel_size=.nan", "memory.voxel_size"), ("sim.max_linear=.inf", "sim.max_linear"),
    ("sim.max_angular=-.inf", "sim.max_angular"), ("retrieval.k=true", "retrieval.k"),
    ("memory.max_voxels=false", "memory.max_voxels"), ("render.compile=1", "render.compile"),
    ("sim.mount_xyz=[0,0]", "sim.mount_xyz"), ("sim.mount_rpy=[0,0,0,0]", "sim.mount_rpy"),
    ("sim.mount_xyz=[0,0,true]", "sim.mount_xyz[2]"), ("camera.intrinsics=[1,2,3]", "camera.intrinsics"),
    ("retrieval.k=2.5", "retrieval.k"), ("world.frames=[-1]", "world.frames[0]"), ("generator.dtype=int8", "generator.dtype"),
    ("generator.offload=all", "generator.offload"), ("render.kernel=cuda", "render.kernel"), ("device=tpu", "device"),
    ("world.path=[a]", "world.path"), ("memory.voxel_size={a: 1}", "memory.voxel_size"),
])
def test_bad_values_are_refused_with_the_key_in_the_message(override, names):
    with pytest.raises(InputError) as err:
        SpatiaConfig().with_overrides([override])
    message = str(err.value)
    assert names in message and "\n" not in message, message


def test_message_names_the_rule():
    with pytest.raises(InputError, match=r"memory\.block_size: Input should be greater than 0"):
        SpatiaConfig().with_overrides(["memory.block_size=0"])
    with pytest.raises(InputError, match=r"retrieval\.epsilon: Input should be less than or equal to 1"):
        SpatiaConfig().with_overrides(["retrieval.epsilon=5"])
    with pytest.raises(InputError, match=r"world\.source: Input should be 'builtin'"):
        SpatiaConfig().with_overrides(["world.source=nonsense"])
    with pytest.raises(InputError, match=r"unknown config key"):
        SpatiaConfig.from_dict({"memory": {"voxel_sise": 0.1}})
    with pytest.raises(InputError, match=r"memory\.min_depth must be < memory\.max_depth"):
        SpatiaConfig().with_overrides({"memory.min_depth": 5.0, "memory.max_depth": 1.0})


@pytest.mark.parametrize("key,value", [("sim.max_linear", math.nan), ("sim.max_linear", math.inf), ("sim.max_linear", -1.0),
                                       ("retrieval.k", True), ("memory.max_voxels", 1.5), ("sim.rate_hz", 0),
                                       ("sim.mount_xyz", [0.0, math.nan, 1.0]), ("generator.steps", "many")])
def test_typed_values_from_ros_or_python_are_refused(key, value):
    """What the node's set-parameters callback and declare_config pass: typed values in a dict."""
    with pytest.raises(InputError):
        SpatiaConfig().with_overrides({key: value})


def test_the_same_schema_checks_yaml_ros_files_construction_and_assignment(tmp_path):
    plain = tmp_path / "plain.yaml"
    plain.write_text("memory:\n  block_size: 0\n")
    ros = tmp_path / "ros.yaml"
    ros.write_text("world_sim:\n  ros__parameters:\n    retrieval:\n      epsilon: 5.0\n")
    flat = tmp_path / "flat.yaml"  # as `ros2 param dump` writes nested names flat
    flat.write_text("world_sim:\n  ros__parameters:\n    render.near: -1.0\n    use_sim_time: true\n")
    for path in (plain, ros, flat):
        with pytest.raises(InputError):
            SpatiaConfig.from_yaml(path)
    flat.write_text("world_sim:\n  ros__parameters:\n    render.near: 0.2\n    memory:\n      voxel_size: 1e-3\n")
    cfg = SpatiaConfig.from_yaml(flat)
    assert cfg.render.near == 0.2 and cfg.memory.voxel_size == 0.001  # PyYAML reads 1e-3 as text
    with pytest.raises(InputError):
        MemoryConfig(block_size=0)
    with pytest.raises(InputError):
        WorldConfig(source="nonsense")
    sim = SimConfig()
    with pytest.raises(InputError):
        sim.max_linear = math.nan
    with pytest.raises(InputError):
        sim.mount_xyz = "abc"
    assert sim.max_linear == 2.0 and sim.mount_xyz == [0.0, 0.0, 1.2]


def test_types_are_normalised_and_dataclass_api_kept():
    cfg = SpatiaConfig().with_overrides({"memory.voxel_size": 1, "retrieval.k": 3.0, "camera.intrinsics": (500, 500, 320, 240),
                                         "generator.prompt": 12, "world.path": None})
    assert isinstance(cfg.memory.voxel_size, float) and cfg.retrieval.k == 3 and isinstance(cfg.retrieval.k, int)
    assert cfg.camera.intrinsics == [500.0, 500.0, 320.0, 240.0] and cfg.generator.prompt == "12" and cfg.world.path == ""
    assert dataclasses.replace(cfg.update, depth="mono").depth == "mono"
    with pytest.raises(InputError):
        dataclasses.replace(cfg.update, depth="bogus")
    assert SpatiaConfig.from_dict(cfg.to_dict()) == cfg
    assert SpatiaConfig.from_dict({"memory": None}) == SpatiaConfig()  # an empty YAML section
    a, b = SimConfig(), SimConfig()
    a.mount_xyz.append(9.0)
    assert b.mount_xyz == [0.0, 0.0, 1.2], "list defaults are per instance"
    cfg.sim.mount_xyz.append(1.0)  # changed in place, past assignment validation
    with pytest.raises(InputError, match="sim.mount_xyz"):
        cfg.validate()


def test_every_key_has_a_description_and_simple_ranges():
    specs = parameter_specs()
    assert set(specs) == set(SpatiaConfig().flatten())
    assert all(s.description for s in specs.values()), [k for k, s in specs.items() if not s.description]
    assert specs["memory.voxel_size"].description.startswith("voxel edge")
    assert specs["memory.voxel_size"].constraints == "> 0" and specs["memory.voxel_size"].low is None
    assert (specs["retrieval.epsilon"].low, specs["retrieval.epsilon"].high) == (0, 1)
    assert (specs["camera.width"].low, specs["camera.width"].high) == (0, 8192)
    assert "one of: auto, rendered" in specs["update.depth"].constraints
    assert specs["sim.mount_xyz"].constraints == "3 items"


def test_training_configs_use_the_same_schema():
    from spatia_core.training.flow import FlowConfig
    from spatia_core.training.trainer import TrainConfig

    for bad in ({"stage": 3}, {"steps": True}, {"steps": 0}, {"lr": -1.0}, {"mixed_precision": "fp8"},
                {"val_sigmas": (0.5, 1.5)}, {"adam_betas": (0.9,)}, {"text_dropout": math.nan}, {"bogus": 1},
                {"flow": {"t_aug_max": 2000.0}}, {"flow": {"shift": math.inf}}):
        with pytest.raises(InputError):
            TrainConfig(**bad)
    cfg = TrainConfig(stage=2, steps=10.0, flow={"shift": 5.0})
    assert cfg.steps == 10 and isinstance(cfg.flow, FlowConfig) and cfg.flow.shift == 5.0
    assert TrainConfig.__pydantic_fields__["lr"].description.startswith("Learning rate")
    with pytest.raises(InputError):
        cfg.stage = 7
