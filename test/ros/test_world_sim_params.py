"""world_sim's parameters come from the typed config schema (issue 13): descriptors carry each
field's description, constraints and simple ranges; `ros2 param set` values the schema refuses are
rejected with its message at run time; the node publishes with the one QoS table."""

import math

import pytest

import _prereq
from processes import RCLPY_MISSING, running_world_sim

pytestmark = _prereq.mark(RCLPY_MISSING, RCLPY_MISSING)


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    with running_world_sim(tmp_path_factory.mktemp("params"), "node.log", 32, 24, 0.05, rate_hz=5.0) as proc:
        yield proc


def _call(ros, srv_type, name, request, timeout=30.0):
    client = ros.node.create_client(srv_type, name)
    try:
        assert client.wait_for_service(timeout_sec=30.0), f"service {name} not available"
        future = client.call_async(request)
        assert ros.spin_until(future.done, timeout), f"service {name} did not answer"
        return future.result()
    finally:
        ros.node.destroy_client(client)


def test_descriptors_carry_the_schema(ros, node):
    from rcl_interfaces.msg import ParameterType
    from rcl_interfaces.srv import DescribeParameters

    from spatia_core.config import parameter_specs

    names = ["memory.voxel_size", "retrieval.epsilon", "camera.width", "sim.max_linear", "update.depth", "sim.mount_xyz"]
    got = {d.name: d for d in _call(ros, DescribeParameters, "world_sim/describe_parameters",
                                    DescribeParameters.Request(names=names)).descriptors}
    specs = parameter_specs()
    for name in names:
        assert got[name].description.startswith(specs[name].description), (name, got[name].description)
        assert got[name].additional_constraints == specs[name].constraints, name
    assert got["memory.voxel_size"].description.startswith("voxel edge, metres")
    assert got["memory.voxel_size"].additional_constraints == "> 0"
    assert "may change at run time" in got["sim.max_linear"].description
    assert "read at start-up" in got["memory.voxel_size"].description
    (eps,) = got["retrieval.epsilon"].floating_point_range
    assert (eps.from_value, eps.to_value) == (0.0, 1.0)
    (width,) = got["camera.width"].integer_range
    assert (width.from_value, width.to_value) == (0, 8192)
    assert "one of: auto, rendered, multiview, mono, mapanything" in got["update.depth"].additional_constraints
    assert got["sim.mount_xyz"].type == ParameterType.PARAMETER_DOUBLE_ARRAY


def test_runtime_values_the_schema_refuses_are_rejected_with_its_message(ros, node):
    from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
    from rcl_interfaces.srv import GetParameters, SetParameters

    def set_param(name, value):
        if isinstance(value, float):
            v = ParameterValue(type=ParameterType.PARAMETER_DOUBLE, double_value=value)
        else:
            v = ParameterValue(type=ParameterType.PARAMETER_INTEGER, integer_value=value)
        req = SetParameters.Request(parameters=[Parameter(name=name, value=v)])
        return _call(ros, SetParameters, "world_sim/set_parameters", req).results[0]

    for name, value, words in [("sim.max_linear", math.nan, "finite"), ("sim.max_linear", -1.0, "greater than 0"),
                               ("sim.max_angular", math.inf, "finite"), ("sim.cloud_max_points", 0, "greater than or equal to 1"),
                               ("sim.cmd_timeout", -0.5, "greater than or equal to 0")]:
        res = set_param(name, value)
        assert not res.successful and name in res.reason and words in res.reason, (name, value, res.reason)
    refused = set_param("retrieval.epsilon", 5.0)  # outside the descriptor's range: rclpy refuses it first
    assert not refused.successful
    assert set_param("sim.max_linear", 1.5).successful
    got = _call(ros, GetParameters, "world_sim/get_parameters", GetParameters.Request(names=["sim.max_linear"]))
    assert got.values[0].double_value == 1.5


def test_publishers_use_the_qos_table(ros, node):
    from spatia_core import qos
    from spatia_ros.qos import from_profile

    def offered():
        out = {}
        for name in qos.TOPICS:
            full = name if name.startswith("/") else "/" + name
            infos = [i for i in ros.node.get_publishers_info_by_topic(full) if i.node_name == "world_sim"]
            if infos:
                out[name] = from_profile(infos[0].qos_profile)
        return out

    # DDS discovery carries reliability and durability, not the history depth (seen as 0): the depths
    # are checked on the profiles themselves (test/core/test_config_qos.py)
    expected = {n: (q.reliable, q.latched) for n, q in ((n, qos.offered(n)) for n in qos.TOPICS)
                if n not in ("/tf", "/tf_static")}  # TF: published by tf2_ros' broadcasters
    assert ros.spin_until(lambda: set(expected) <= set(offered()), 30), offered()
    seen = offered()
    assert {n: (seen[n].reliable, seen[n].latched) for n in expected} == expected
