"""The ROS 2 Simulation Interfaces standard on world_sim, over DDS with the standard's own types:
features, simulation state, stepping in lockstep with /clock, the SimulateSteps action (feedback,
cancel), reset scopes, entities (spawn, move, delete, seen in the published image), spawnables and
worlds confined to their folders, and the error results."""

import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import _prereq  # noqa: E402  (missing prerequisites: skip here, fail with CI=true)

from processes import RCLPY_MISSING, running_world_sim

pytestmark = _prereq.mark(RCLPY_MISSING, RCLPY_MISSING)
if not RCLPY_MISSING:
    from spatia_ros.sim_interfaces import MISSING as SIMIF_MISSING

    pytestmark = [pytestmark, _prereq.mark(SIMIF_MISSING, SIMIF_MISSING or "")]

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"  # as test/conftest.py
W, H = 128, 96
RATE = 10.0
PERIOD_NS = int(1e9 / RATE)
NS = "/world_sim/"
EYE, TARGET = [0.0, 0.0, 1.2], [3.0, 0.0, 1.2]
IN_VIEW = [1.5, 0.0, 1.2]  # straight ahead of the camera: the image centre
OUT_OF_VIEW = [1.5, 3.0, 1.2]  # 63 degrees to the left: outside the 70 degree view


def _write_ply(path, xyz, rgb):
    """An ASCII PLY point cloud with uchar colours."""
    lines = ["ply", "format ascii 1.0", f"element vertex {len(xyz)}", "property float x", "property float y",
             "property float z", "property uchar red", "property uchar green", "property uchar blue", "end_header"]
    lines += [f"{x:.5f} {y:.5f} {z:.5f} {r} {g} {b}" for (x, y, z), (r, g, b) in zip(xyz, rgb)]
    Path(path).write_text("\n".join(lines) + "\n")


def _cube(size=0.3, step=0.015):
    """Points filling a cube of edge ``size`` centred on the origin."""
    ax = np.arange(-size / 2, size / 2 + 1e-9, step)
    return np.stack(np.meshgrid(ax, ax, ax, indexing="ij"), -1).reshape(-1, 3)


@pytest.fixture(scope="module")
def node_proc(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sim_interfaces")
    spawn, worlds = tmp / "spawnables", tmp / "worlds"
    spawn.mkdir()
    (spawn / "props").mkdir()
    worlds.mkdir()
    cube = _cube()
    _write_ply(spawn / "red_cube.ply", cube, np.tile([255, 0, 0], (len(cube), 1)))
    _write_ply(spawn / "props" / "blue_cube.ply", cube * 0.5, np.tile([0, 0, 255], (len(cube), 1)))
    (spawn / "broken.ply").write_text("ply\nformat ascii 1.0\nelement vertex 5\nend_header\n1 2\n")
    (spawn / "notes.txt").write_text("not a point cloud\n")
    rng = np.random.default_rng(0)
    room = rng.uniform([-2, -2, 0], [2, 2, 2.5], (4000, 3))
    _write_ply(worlds / "scatter.ply", room, rng.integers(0, 255, (4000, 3)))
    _write_ply(tmp / "outside.ply", room, rng.integers(0, 255, (4000, 3)))  # readable, but outside the folders
    (worlds / "link.ply").symlink_to(tmp / "outside.ply")  # a way out of the folder: refused
    (spawn / "link.ply").symlink_to(tmp / "outside.ply")
    (worlds / "not_a_world").mkdir()
    if (DATA / "rgbd_primesense_open3d").is_dir():  # a real RGB-D capture folder, copied in (a link out is refused)
        shutil.copytree(DATA / "rgbd_primesense_open3d", worlds / "primesense")
    with running_world_sim(tmp, "node.log", W, H, 0.03, rate_hz=RATE, cloud_rate_hz=2.0, cloud_max_points=3000,
                           cmd_timeout=0.0, start_paused=True, spawnables_dir=str(spawn), worlds_dir=str(worlds)) as proc:
        yield proc


class Sim:
    """A client of world_sim's standard services; keeps the images and /clock messages."""

    def __init__(self, ros):
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from rosgraph_msgs.msg import Clock
        from sensor_msgs.msg import Image

        deep = QoSProfile(depth=200, reliability=ReliabilityPolicy.RELIABLE)
        self.ros, self.images, self.clock, self.clients = ros, [], [], {}
        ros.node.create_subscription(Image, "camera/image_raw", self.images.append, deep)
        ros.node.create_subscription(Clock, "/clock", lambda m: self.clock.append(_ns(m.clock)), deep)

    def call(self, srv_type, name, request=None, timeout=60.0):
        client = self.clients.get(name)
        if client is None:
            client = self.clients[name] = self.ros.node.create_client(srv_type, NS + name)
            assert client.wait_for_service(timeout_sec=20.0), f"service {NS + name} not available"
        request = request if request is not None else srv_type.Request()
        if name.startswith("get_"):  # read-only: resent if the first request is lost
            reply = self.ros.call_idempotent(client, request, timeout)
            assert reply is not None, f"{name} did not answer"
            return reply
        future = client.call_async(request)
        assert self.ros.spin_until(future.done, timeout), f"{name} did not answer"
        return future.result()

    def ok(self, srv_type, name, request=None):
        res = self.call(srv_type, name, request)
        assert res.result.result == res.result.RESULT_OK, f"{name}: {res.result.result} {res.result.error_message}"
        return res

    def state(self):
        from simulation_interfaces.srv import GetSimulationState

        return self.ok(GetSimulationState, "get_simulation_state").state.state

    def set_state(self, state):
        from simulation_interfaces.msg import SimulationState
        from simulation_interfaces.srv import SetSimulationState

        return self.call(SetSimulationState, "set_simulation_state",
                         SetSimulationState.Request(state=SimulationState(state=state))).result

    def step(self, steps=1):
        from simulation_interfaces.srv import StepSimulation

        return self.call(StepSimulation, "step_simulation", StepSimulation.Request(steps=steps)).result

    def stepped_image(self):
        """Step once (paused) and return the frame it published, uint8 (H, W, 3)."""
        from spatia_ros.conversions import image_to_numpy

        n = len(self.images)
        res = self.step(1)
        assert res.result == res.RESULT_OK, res.error_message
        assert self.ros.spin_until(lambda: len(self.images) > n, 20), "no image"
        return image_to_numpy(self.images[-1])

    def last_clock_after(self, fn):
        """Run ``fn`` (a stepping call) and return the /clock time it ended at (the latest tick:
        time may have been reset, so not the largest)."""
        fn()
        self.ros.spin_until(lambda: False, 0.3)  # the last /clock message may trail the reply
        return self.clock[-1]


def _ns(t):
    return t.sec * 10**9 + t.nanosec


def _pose_stamped(xyz, frame="map", quat=(0.0, 0.0, 0.0, 1.0)):
    from geometry_msgs.msg import PoseStamped

    msg = PoseStamped()
    msg.header.frame_id = frame
    msg.pose.position.x, msg.pose.position.y, msg.pose.position.z = (float(v) for v in xyz)
    msg.pose.orientation.x, msg.pose.orientation.y, msg.pose.orientation.z, msg.pose.orientation.w = quat
    return msg


def _red_fraction(img, box=None):
    """Share of pure-red pixels (in ``box`` = (y0, y1, x0, x1), default the whole image)."""
    if box is not None:
        img = img[box[0]:box[1], box[2]:box[3]]
    r, g, b = (img[..., i].astype(int) for i in range(3))
    return float(np.mean((r > 150) & (g < 90) & (b < 90)))


CENTRE = (H // 2 - 4, H // 2 + 4, W // 2 - 4, W // 2 + 4)


@pytest.fixture(scope="module")
def sim(ros, node_proc):
    client = Sim(ros)
    client.tmp = node_proc.tmp
    return client


@pytest.fixture(scope="module")
def entities_supported(sim):
    from simulation_interfaces.msg import SimulatorFeatures
    from simulation_interfaces.srv import GetSimulatorFeatures

    if SimulatorFeatures.SPAWNING not in sim.call(GetSimulatorFeatures, "get_simulator_features").features.features:
        pytest.skip("WorldSimulator has no entity API yet (spawn_entity): the entity services are not offered")


def _place_camera(sim):
    """Put the camera at EYE looking at TARGET with a one-pose generate_trajectory (runs while paused)."""
    from rclpy.action import ActionClient

    from spatia_core import look_at
    from spatia_ros.action import GenerateTrajectory
    from spatia_ros.conversions import matrix_to_pose

    client = ActionClient(sim.ros.node, GenerateTrajectory, "generate_trajectory")
    assert client.wait_for_server(timeout_sec=20)
    goal = GenerateTrajectory.Goal(poses=[_pose_stamped([0, 0, 0])])
    goal.poses[0].pose = matrix_to_pose(look_at(EYE, TARGET))
    send = client.send_goal_async(goal)
    assert sim.ros.spin_until(send.done, 20) and send.result().accepted
    result = send.result().get_result_async()
    assert sim.ros.spin_until(result.done, 60) and result.result().result.success


# -- simulator ---------------------------------------------------------------------------------
def test_features_are_exactly_the_services_offered(sim):
    from simulation_interfaces.msg import SimulatorFeatures as F
    from simulation_interfaces.srv import GetSimulatorFeatures

    res = sim.call(GetSimulatorFeatures, "get_simulator_features")
    features = set(res.features.features)
    assert {F.SIMULATION_RESET, F.SIMULATION_RESET_TIME, F.SIMULATION_RESET_STATE, F.SIMULATION_RESET_SPAWNED,
            F.SIMULATION_STATE_GETTING, F.SIMULATION_STATE_SETTING, F.SIMULATION_STATE_PAUSE,
            F.STEP_SIMULATION_SINGLE, F.STEP_SIMULATION_MULTIPLE, F.STEP_SIMULATION_ACTION, F.WORLD_LOADING,
            F.WORLD_INFO_GETTING, F.AVAILABLE_WORLDS, F.SPAWNABLES} <= features
    never = {F.NAMED_POSES, F.POSE_BOUNDS, F.ENTITY_TAGS, F.ENTITY_BOUNDS_CONVEX, F.ENTITY_CATEGORIES,
             F.SPAWNING_RESOURCE_STRING, F.ENTITY_INFO_SETTING, F.WORLD_RESOURCE_STRING, F.WORLD_TAGS,
             F.WORLD_UNLOADING, F.SPAWNING_ENTITIES}
    assert not features & never
    # each claimed interface exists, under the names Gazebo uses (<simulator node>/<snake_case>)
    service_of = {F.SPAWNING: "spawn_entity", F.DELETING: "delete_entity", F.ENTITY_BOUNDS: "get_entity_bounds",
                  F.ENTITY_STATE_GETTING: "get_entity_state", F.ENTITY_STATE_SETTING: "set_entity_state",
                  F.ENTITY_INFO_GETTING: "get_entity_info", F.SPAWNABLES: "get_spawnables",
                  F.SIMULATION_RESET: "reset_simulation", F.SIMULATION_STATE_GETTING: "get_simulation_state",
                  F.SIMULATION_STATE_SETTING: "set_simulation_state", F.STEP_SIMULATION_SINGLE: "step_simulation",
                  F.WORLD_LOADING: "load_world", F.WORLD_INFO_GETTING: "get_current_world",
                  F.AVAILABLE_WORLDS: "get_available_worlds", F.WORLD_UNLOADING: "unload_world",
                  F.NAMED_POSES: "get_named_poses", F.ENTITY_INFO_SETTING: "set_entity_info",
                  F.SPAWNING_ENTITIES: "spawn_entities"}

    def offered():
        return {n for n, _ in sim.ros.node.get_service_names_and_types() if n.startswith(NS)}

    assert sim.ros.spin_until(lambda: NS + "load_world" in offered(), 20)
    for feature, name in service_of.items():
        assert (NS + name in offered()) == (feature in features), name
    if F.SPAWNING in features:
        assert list(res.features.spawn_formats) == ["ply"] and F.ENTITY_BOUNDS_BOX in features
    from rclpy.action import get_action_names_and_types

    assert sim.ros.spin_until(lambda: (NS + "simulate_steps", ["simulation_interfaces/action/SimulateSteps"]) in [
        (n, list(t)) for n, t in get_action_names_and_types(sim.ros.node)], 20), "the SimulateSteps action"


def test_simulation_state_transitions(sim):
    from simulation_interfaces.msg import Result
    from simulation_interfaces.msg import SimulationState as S
    from simulation_interfaces.srv import SetSimulationState

    R = SetSimulationState.Response
    assert sim.state() == S.STATE_STOPPED, "started with sim.start_paused: stopped, as a simulator is at launch"
    assert sim.set_state(S.STATE_STOPPED).result == R.ALREADY_IN_TARGET_STATE
    assert sim.set_state(S.STATE_PAUSED).result == R.INCORRECT_TRANSITION, "pausing a stopped simulation"
    assert sim.set_state(S.STATE_QUITTING).result == Result.RESULT_FEATURE_UNSUPPORTED
    assert sim.set_state(S.STATE_NO_WORLD).result == R.INCORRECT_TRANSITION
    n = len(sim.images)
    assert sim.set_state(S.STATE_PLAYING).result == Result.RESULT_OK and sim.state() == S.STATE_PLAYING
    assert sim.ros.spin_until(lambda: len(sim.images) >= n + 3, 20), "playing: frames run free"
    res = sim.step(1)
    assert res.result == Result.RESULT_OPERATION_FAILED and "pause" in res.error_message, "no stepping while playing"
    assert sim.set_state(S.STATE_PAUSED).result == Result.RESULT_OK and sim.state() == S.STATE_PAUSED
    assert sim.set_state(S.STATE_PAUSED).result == R.ALREADY_IN_TARGET_STATE
    # stopped = paused + reset ALL: time starts again from 0
    assert sim.set_state(S.STATE_STOPPED).result == Result.RESULT_OK and sim.state() == S.STATE_STOPPED
    assert sim.step(1).result == Result.RESULT_OK
    assert sim.state() == S.STATE_PAUSED, "a stepped stopped simulation is paused"
    assert sim.ros.spin_until(lambda: PERIOD_NS in sim.clock[-3:], 10), "the first step after stop is at 1 period"


def test_step_simulation_in_lockstep_with_clock(sim):
    from simulation_interfaces.msg import Result

    t0 = sim.last_clock_after(lambda: sim.step(1))
    n_clock, n_images = len(sim.clock), len(sim.images)
    res = sim.step(5)
    assert res.result == Result.RESULT_OK, res.error_message
    want = [t0 + i * PERIOD_NS for i in range(1, 6)]
    assert sim.ros.spin_until(lambda: len(sim.clock) >= n_clock + 5 and len(sim.images) >= n_images + 5, 20)
    sim.ros.spin_until(lambda: False, 0.5)  # paused: nothing happens between steps
    assert sim.clock[n_clock:] == want, "exactly 5 ticks, one period apart"
    assert [_ns(m.header.stamp) for m in sim.images[n_images:]] == want, "one image per tick, stamped with it"
    assert sim.step(0).result == Result.RESULT_OPERATION_FAILED
    assert sim.step(2**40).result == Result.RESULT_OPERATION_FAILED, "an unbounded step is refused"
    assert sim.last_clock_after(lambda: sim.step(1)) == want[-1] + PERIOD_NS, "and nothing of them ran"


def test_simulate_steps_feedback_and_cancel(sim):
    from action_msgs.msg import GoalStatus
    from rclpy.action import ActionClient
    from simulation_interfaces.action import SimulateSteps
    from simulation_interfaces.msg import Result

    client = ActionClient(sim.ros.node, SimulateSteps, NS + "simulate_steps")
    assert client.wait_for_server(timeout_sec=20)

    def run(steps, feedback, cancel_after=None):
        send = client.send_goal_async(SimulateSteps.Goal(steps=steps),
                                      feedback_callback=lambda f: feedback.append(
                                          (f.feedback.completed_steps, f.feedback.remaining_steps)))
        assert sim.ros.spin_until(send.done, 20) and send.result().accepted
        handle = send.result()
        if cancel_after is not None:
            assert sim.ros.spin_until(lambda: feedback and feedback[-1][0] >= cancel_after, 60)
            cancel = handle.cancel_goal_async()
            assert sim.ros.spin_until(cancel.done, 20) and cancel.result().goals_canceling
        result = handle.get_result_async()
        assert sim.ros.spin_until(result.done, 120)
        return result.result()

    t0 = sim.last_clock_after(lambda: None)
    feedback = []
    done = run(6, feedback)
    assert done.status == GoalStatus.STATUS_SUCCEEDED and done.result.result.result == Result.RESULT_OK
    assert sim.ros.spin_until(lambda: feedback and feedback[-1] == (6, 0), 20), feedback
    assert feedback == [(i, 6 - i) for i in range(1, 7)], "feedback after each step"
    assert sim.ros.spin_until(lambda: sim.clock[-1] == t0 + 6 * PERIOD_NS, 20), "in lockstep with /clock"

    feedback = []
    done = run(100_000, feedback, cancel_after=3)
    assert done.status == GoalStatus.STATUS_CANCELED
    completed = max(c for c, _ in feedback)
    assert 3 <= completed < 100_000
    t1 = sim.last_clock_after(lambda: None)
    assert sim.last_clock_after(lambda: sim.step(1)) == t1 + PERIOD_NS, "nothing runs on after the cancel"

    done = run(0, [])
    assert done.status == GoalStatus.STATUS_ABORTED and done.result.result.result == Result.RESULT_OPERATION_FAILED


# -- entities ----------------------------------------------------------------------------------
def _spawn(sim, name, uri="red_cube.ply", xyz=IN_VIEW, frame="map", allow_renaming=False, quat=(0.0, 0.0, 0.0, 1.0)):
    from simulation_interfaces.srv import SpawnEntity

    req = SpawnEntity.Request(name=name, allow_renaming=allow_renaming, initial_pose=_pose_stamped(xyz, frame, quat))
    req.entity_resource.uri = uri
    return sim.call(SpawnEntity, "spawn_entity", req)


def _set_pose(sim, name, xyz, frame="map", quat=(0.0, 0.0, 0.0, 1.0)):
    from simulation_interfaces.msg import EntityState
    from simulation_interfaces.srv import SetEntityState

    state = EntityState()
    state.header.frame_id = frame
    state.pose = _pose_stamped(xyz, frame, quat).pose
    return sim.call(SetEntityState, "set_entity_state",
                    SetEntityState.Request(entity=name, state=state, set_pose=True)).result


def _entity_xyz(sim, name):
    from simulation_interfaces.srv import GetEntityState

    p = sim.ok(GetEntityState, "get_entity_state", GetEntityState.Request(entity=name)).state.pose.position
    return [p.x, p.y, p.z]


def test_spawn_move_delete_round_trip_in_the_image(sim, entities_supported):
    from simulation_interfaces.msg import Result
    from simulation_interfaces.srv import DeleteEntity, GetEntities

    _place_camera(sim)
    assert _red_fraction(sim.stepped_image(), CENTRE) < 0.1, "the room has no red in the view's centre"
    res = _spawn(sim, "crate")
    assert res.result.result == Result.RESULT_OK and res.entity_name == "crate", res.result.error_message
    assert list(sim.ok(GetEntities, "get_entities").entities) == ["crate"]
    assert _entity_xyz(sim, "crate") == pytest.approx(IN_VIEW, abs=1e-6)
    assert _red_fraction(sim.stepped_image(), CENTRE) > 0.8, "the spawned cube is in the image"
    assert _set_pose(sim, "crate", OUT_OF_VIEW).result == Result.RESULT_OK
    assert _entity_xyz(sim, "crate") == pytest.approx(OUT_OF_VIEW, abs=1e-6)
    for _ in range(3):  # and stays gone (no ghost) over frames that update the memory
        assert _red_fraction(sim.stepped_image()) < 0.01, "moved out of view: no red left where it was"
    assert _set_pose(sim, "crate", IN_VIEW).result == Result.RESULT_OK
    assert _red_fraction(sim.stepped_image(), CENTRE) > 0.8, "moved back into view"
    assert sim.ok(DeleteEntity, "delete_entity", DeleteEntity.Request(entity="crate"))
    for _ in range(3):
        assert _red_fraction(sim.stepped_image()) < 0.01, "deleted: gone from the image"
    assert list(sim.ok(GetEntities, "get_entities").entities) == []


def test_entity_error_results(sim, entities_supported):
    from simulation_interfaces.msg import EntityState, Result
    from simulation_interfaces.srv import (DeleteEntity, GetEntityBounds, GetEntityInfo, GetEntityState,
                                           SetEntityState, SpawnEntity)

    R = SpawnEntity.Response
    for typ, name in [(GetEntityState, "get_entity_state"), (GetEntityInfo, "get_entity_info"),
                      (GetEntityBounds, "get_entity_bounds"), (DeleteEntity, "delete_entity")]:
        assert sim.call(typ, name, typ.Request(entity="ghost")).result.result == Result.RESULT_NOT_FOUND, name
    assert _set_pose(sim, "ghost", IN_VIEW).result == Result.RESULT_NOT_FOUND
    assert _spawn(sim, "a", quat=(0.0, 0.0, 0.0, 0.0)).result.result == R.INVALID_POSE, "zero quaternion"
    assert _spawn(sim, "a", xyz=[math.nan, 0, 0]).result.result == R.INVALID_POSE
    assert _spawn(sim, "a", frame="no_such_frame").result.result == R.INVALID_POSE
    assert _spawn(sim, "bad name!").result.result == R.NAME_INVALID
    assert _spawn(sim, "").result.result == R.NAME_INVALID, "empty name without allow_renaming"
    assert _spawn(sim, "a", uri="").result.result == R.NO_RESOURCE
    assert _spawn(sim, "a", uri="notes.txt").result.result == R.UNSUPPORTED_FORMAT
    assert _spawn(sim, "a", uri="broken.ply").result.result == R.RESOURCE_PARSE_ERROR
    for outside in ["../outside.ply", str(sim.tmp / "outside.ply"), "link.ply", "missing.ply"]:
        res = _spawn(sim, "a", uri=outside)
        assert res.result.result == Result.RESULT_NOT_FOUND and "spawnables_dir" in res.result.error_message, outside
    req = SpawnEntity.Request(name="a")
    req.entity_resource.resource_string = "ply\n"
    assert sim.call(SpawnEntity, "spawn_entity", req).result.result == Result.RESULT_FEATURE_UNSUPPORTED
    assert _spawn(sim, "box", uri="props/blue_cube.ply").result.result == Result.RESULT_OK
    assert _spawn(sim, "box").result.result == R.NAME_NOT_UNIQUE
    renamed = _spawn(sim, "box", allow_renaming=True, xyz=[1.5, -0.5, 1.2])
    assert renamed.result.result == Result.RESULT_OK and renamed.entity_name not in ("", "box")
    unnamed = _spawn(sim, "", allow_renaming=True, xyz=[1.5, 0.5, 1.2])
    assert unnamed.result.result == Result.RESULT_OK and unnamed.entity_name.startswith("red_cube")
    # relative to another entity's frame
    assert _spawn(sim, "on_box", frame="box", xyz=[0, 0, 0.5]).result.result == Result.RESULT_OK
    assert _entity_xyz(sim, "on_box") == pytest.approx([IN_VIEW[0], IN_VIEW[1], IN_VIEW[2] + 0.5], abs=1e-6)
    assert _set_pose(sim, "box", IN_VIEW, quat=(0.0, 0.0, 0.0, 0.0)).result == SetEntityState.Response.INVALID_POSE
    assert _set_pose(sim, "box", [math.inf, 0, 0]).result == SetEntityState.Response.INVALID_POSE
    state = EntityState()
    state.twist.linear.x = 1.0
    res = sim.call(SetEntityState, "set_entity_state", SetEntityState.Request(entity="box", state=state, set_twist=True))
    assert res.result.result == Result.RESULT_OPERATION_FAILED, "static objects take no twist"
    res = sim.call(SetEntityState, "set_entity_state",
                   SetEntityState.Request(entity="box", state=EntityState(), set_twist=True, set_acceleration=True))
    assert res.result.result == Result.RESULT_OK, "a zero twist is fine"
    assert _entity_xyz(sim, "box") == pytest.approx(IN_VIEW, abs=1e-6), "set_pose false: the pose stays"


def test_entity_queries_and_bounds(sim, entities_supported):
    from geometry_msgs.msg import Vector3
    from simulation_interfaces.msg import Bounds, EntityCategory, EntityFilters, Result
    from simulation_interfaces.srv import GetEntities, GetEntitiesStates, GetEntityBounds, GetEntityInfo

    names = set(sim.ok(GetEntities, "get_entities").entities)
    assert {"box", "on_box"} <= names

    def query(**kw):
        return sim.call(GetEntities, "get_entities", GetEntities.Request(filters=EntityFilters(**kw)))

    assert set(query(filter="^box").entities) == {"box"} | {n for n in names if n.startswith("box")}
    assert query(filter="(").result.result == Result.RESULT_OPERATION_FAILED, "a bad regular expression"
    box = Bounds(type=Bounds.TYPE_BOX, points=[Vector3(x=1.4, y=-0.1, z=1.65), Vector3(x=1.6, y=0.1, z=1.75)])
    assert set(query(bounds=box).entities) == {"on_box"}, "only on_box overlaps this box"
    sphere = Bounds(type=Bounds.TYPE_SPHERE, points=[Vector3(x=1.5, y=0.0, z=1.2), Vector3(x=0.01)])
    assert "on_box" not in query(bounds=sphere).entities and "box" in query(bounds=sphere).entities
    far = Bounds(type=Bounds.TYPE_SPHERE, points=[Vector3(x=50.0), Vector3(x=1.0)])
    assert list(query(bounds=far).entities) == []
    hull = Bounds(type=Bounds.TYPE_CONVEX_HULL, points=[Vector3(), Vector3(x=1.0), Vector3(y=1.0)])
    assert query(bounds=hull).result.result == Result.RESULT_FEATURE_UNSUPPORTED
    assert query(categories=[EntityCategory()]).result.result == Result.RESULT_FEATURE_UNSUPPORTED
    states = sim.ok(GetEntitiesStates, "get_entities_states")
    assert set(states.entities) == names and len(states.states) == len(names)
    assert all(s.header.frame_id == "map" for s in states.states)
    info = sim.ok(GetEntityInfo, "get_entity_info", GetEntityInfo.Request(entity="box")).info
    assert info.category.category == EntityCategory.CATEGORY_STATIC_OBJECT and "blue_cube" in info.description
    b = sim.ok(GetEntityBounds, "get_entity_bounds", GetEntityBounds.Request(entity="box")).bounds
    assert b.type == Bounds.TYPE_BOX and len(b.points) == 2
    hi, lo = (np.array([p.x, p.y, p.z]) for p in b.points)
    # the blue cube is 0.15 m wide, centred on its frame; bounds are in the entity's frame
    assert lo == pytest.approx([-0.075] * 3, abs=0.04) and hi == pytest.approx([0.075] * 3, abs=0.04)


def test_reset_scopes(sim, entities_supported):
    from simulation_interfaces.msg import Result
    from simulation_interfaces.srv import GetEntities, ResetSimulation

    Q = ResetSimulation.Request
    assert _set_pose(sim, "box", OUT_OF_VIEW).result == Result.RESULT_OK
    sim.step(3)
    assert sim.ok(ResetSimulation, "reset_simulation", Q(scope=Q.SCOPE_STATE))
    assert _entity_xyz(sim, "box") == pytest.approx(IN_VIEW, abs=1e-6), "STATE: entities back at their spawn poses"
    assert sim.last_clock_after(lambda: sim.step(1)) > PERIOD_NS, "STATE alone keeps the time"
    assert sim.ok(ResetSimulation, "reset_simulation", Q(scope=Q.SCOPE_TIME))
    assert sim.last_clock_after(lambda: sim.step(1)) == PERIOD_NS, "TIME: time starts from 0 again"
    assert sim.call(ResetSimulation, "reset_simulation", Q(scope=8)).result.result == Result.RESULT_FEATURE_UNSUPPORTED
    assert sim.ok(GetEntities, "get_entities").entities, "nothing despawned so far"
    assert sim.ok(ResetSimulation, "reset_simulation", Q(scope=Q.SCOPE_SPAWNED))
    assert list(sim.ok(GetEntities, "get_entities").entities) == [], "SPAWNED: every entity is gone"
    assert _spawn(sim, "crate").result.result == Result.RESULT_OK
    sim.step(2)
    assert sim.ok(ResetSimulation, "reset_simulation", Q(scope=Q.SCOPE_DEFAULT))
    assert list(sim.ok(GetEntities, "get_entities").entities) == []
    assert sim.last_clock_after(lambda: sim.step(1)) == PERIOD_NS, "DEFAULT = ALL"


# -- spawnables and worlds ------------------------------------------------------------------------
def test_spawnables_are_the_ply_files_of_the_folder(sim):
    from simulation_interfaces.msg import Result
    from simulation_interfaces.srv import GetSpawnables

    res = sim.call(GetSpawnables, "get_spawnables", GetSpawnables.Request(sources=["http://example.com/models"]))
    assert res.result.result == Result.RESULT_OK and "example.com" in res.result.error_message, "unknown sources are named"
    uris = sorted(s.entity_resource.uri for s in res.spawnables)
    if uris:  # with the entity API
        assert uris == ["broken.ply", "props/blue_cube.ply", "red_cube.ply"]


def test_worlds_are_confined_to_the_worlds_folder(sim, node_proc):
    from simulation_interfaces.msg import Result
    from simulation_interfaces.msg import SimulationState as S
    from simulation_interfaces.srv import GetAvailableWorlds, GetCurrentWorld, LoadWorld

    worlds = sim.ok(GetAvailableWorlds, "get_available_worlds").worlds
    rgbd = [("primesense", "primesense", ["rgbd_folder"])] if (node_proc.tmp / "worlds" / "primesense").is_dir() else []
    assert [(w.name, w.world_resource.uri, list(w.tags)) for w in worlds] == [
        ("builtin", "builtin", ["builtin"]), *rgbd, ("scatter", "scatter.ply", ["ply"])]
    assert sim.ok(GetCurrentWorld, "get_current_world").world.name == "builtin"

    def load(uri):
        req = LoadWorld.Request()
        req.world_resource.uri = uri
        return sim.call(LoadWorld, "load_world", req)

    answers = set()
    for bad in ["../outside.ply", str(node_proc.tmp / "outside.ply"), "file://" + str(node_proc.tmp / "outside.ply"),
                "link.ply", "missing.ply", "not_a_world/../../outside.ply", str(node_proc.tmp / "missing.ply")]:
        res = load(bad)
        assert res.result.result == Result.RESULT_NOT_FOUND and "worlds_dir" in res.result.error_message, bad
        answers.add(res.result.error_message.replace(repr(bad), "URI"))
    assert len(answers) == 1, f"one answer whether or not the file exists outside: {answers}"
    assert load("").result.result == LoadWorld.Response.NO_RESOURCE
    sim.set_state(S.STATE_PLAYING)
    res = load("scatter.ply")
    assert res.result.result == Result.RESULT_OK, res.result.error_message
    assert res.world.name == "scatter" and sim.state() == S.STATE_STOPPED, "a loaded world is left stopped"
    current = sim.ok(GetCurrentWorld, "get_current_world").world
    assert (current.name, current.world_resource.uri) == ("scatter", "scatter.ply")
    assert sim.last_clock_after(lambda: sim.step(1)) == PERIOD_NS
    if rgbd:
        res = load("primesense")
        assert res.result.result == Result.RESULT_OK, res.result.error_message
        assert sim.ok(GetCurrentWorld, "get_current_world").world.tags == ["rgbd_folder"]
    res = load("builtin:3")
    assert res.result.result == Result.RESULT_OK and res.world.world_resource.uri == "builtin:3"
    assert sim.ok(GetCurrentWorld, "get_current_world").world.world_resource.uri == "builtin:3"


def test_without_the_package_the_node_runs_and_says_why(tmp_path, ros):
    """A stand-in package that fails to import hides simulation_interfaces (as on a ROS install
    without ros-<distro>-simulation-interfaces): one log line, no standard services, frames flow."""
    import os
    import signal

    from sensor_msgs.msg import Image

    from processes import start_world_sim, stop

    shim = tmp_path / "shim" / "simulation_interfaces"
    shim.mkdir(parents=True)
    (shim / "__init__.py").write_text("raise ImportError('hidden by the test')\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(shim.parent), os.environ.get("PYTHONPATH", "")])}
    ns = "no_simif"
    (tmp_path / "maps").mkdir()
    proc = start_world_sim(tmp_path, "node.log", W, H, 0.03, rate_hz=RATE, env=env, extra_args=["-r", f"__ns:=/{ns}"])
    try:
        log = proc.log_path.read_text()
        lines = [ln for ln in log.splitlines() if "Simulation Interfaces" in ln]
        assert len(lines) == 1 and "hidden by the test" in lines[0] and "runs without" in lines[0], log[-2000:]
        images = []
        ros.node.create_subscription(Image, f"/{ns}/camera/image_raw", images.append, 10)
        assert ros.spin_until(lambda: len(images) >= 2, 30), "frames flow without the standard's services"
        names = {n for n, _ in ros.node.get_service_names_and_types()}
        assert f"/{ns}/world_sim/step_simulation" not in names and f"/{ns}/reset_world" in names
    finally:
        assert stop(proc, signal.SIGTERM) == 0
