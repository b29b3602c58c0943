"""The ROS 2 Simulation Interfaces standard (``simulation_interfaces`` 2.x) on world_sim.

Services and the action are named as Gazebo names them (``/gzserver/<snake_case>``): the
simulator node's private names, here ``/world_sim/get_simulator_features``, ``~/step_simulation``,
``~/simulate_steps`` (action) and so on. Each handler converts messages to numpy and calls
:class:`spatia_core.simulator.WorldSimulator` (or the node's frame-job queue for stepping); it
answers a ``simulation_interfaces/Result`` for every failure and never raises.

What is supported is exactly what ``get_simulator_features`` lists (:meth:`SimInterfaces.features`);
the rest of the standard (named poses, tags, categories as filters, convex-hull filters,
resource strings, SetEntityInfo, SpawnEntities, UnloadWorld, quitting) is not offered.
Choices where the standard's texts leave room (documented in the README):

* stepping (``step_simulation``, ``simulate_steps``) needs the paused or stopped state, else
  ``RESULT_OPERATION_FAILED`` (the services' own text); one step = one produced frame, /clock
  advancing by one period, the same lockstep jobs as our ``step`` service;
* ``set_simulation_state``: STOPPED = pause + ``reset_simulation`` ALL; STOPPED -> PAUSED is
  ``INCORRECT_TRANSITION`` (SetSimulationState.srv); stepping a stopped simulation makes it paused;
* ``reset_simulation``: TIME sets sim time back to 0; STATE reloads the current world (memory,
  camera at its start, velocity zero) and puts the entities that survive back at their spawn
  poses; SPAWNED deletes every entity; ALL (or DEFAULT) is all three;
* entities are :meth:`WorldSimulator.spawn_entity` objects (PLY files from ``sim.spawnables_dir``),
  category STATIC_OBJECT: SetEntityState moves them; a non-zero twist or acceleration is refused;
* worlds are ``builtin`` (``builtin`` or ``builtin:SEED``), and the PLY maps, RGB-D, test-case
  and capture folders in ``sim.worlds_dir`` (symlinks resolved, nothing outside it is read).
"""

from __future__ import annotations

import re
import threading
from pathlib import Path

import numpy as np

from spatia_core.config import WorldConfig
from spatia_core.errors import FileFormatError, SpatiaError
from spatia_core.geometry import invert_pose
from spatia_core.paths import open_inside, resolve_inside
from spatia_ros import conversions as cv

try:
    from simulation_interfaces import action as sim_action
    from simulation_interfaces import msg as sim_msg
    from simulation_interfaces import srv as sim_srv
    MISSING = ""
except ImportError as exc:  # no ROS package, and scripts/setup.sh found no source to build it from
    MISSING = f"simulation_interfaces is not importable ({exc})"

#: Longest wait of a stepping call per frame beyond a minute (like our ``step`` service).
_STEP_TIMEOUT_PER_FRAME = 10.0
_NAMESPACE_RE = re.compile(r"^(/?[A-Za-z_][A-Za-z0-9_]*)*/?$")
_WORLD_FRAMES = ("", "world")


def attach(node, callback_group):
    """The standard's services on ``node`` (a :class:`WorldSimNode`), or None when the
    ``simulation_interfaces`` package is absent (logged in one line)."""
    if MISSING:
        node.get_logger().info(f"{MISSING}: world_sim runs without the ROS 2 Simulation Interfaces services")
        return None
    return SimInterfaces(node, callback_group)


class SimInterfaces:
    """Handlers of the simulation_interfaces services and the SimulateSteps action."""

    def __init__(self, node, callback_group):
        from rclpy.action import ActionServer, CancelResponse

        from spatia_ros.world_sim_node import MAX_STEP_FRAMES, _Job, resolve_map_dir

        self.node, self.sim = node, node.sim
        self._Job, self.max_steps = _Job, MAX_STEP_FRAMES
        s = node.config.sim
        self.spawnables_dir = Path(resolve_map_dir(s.spawnables_dir))
        self.worlds_dir = Path(resolve_map_dir(s.worlds_dir))
        self._lock = threading.Lock()  # state changes (reset, load, stop) one at a time
        self._stopped_at = self.sim.frame_index if node.paused else None  # start_paused: stopped
        self._spawned: dict[str, tuple[Path, np.ndarray]] = {}  # entity -> (PLY, spawn pose), for STATE resets
        w = node.config.world
        self._world = self._world_resource(w.source, w.path, w.seed)
        self._world_cfg, self._world_init = WorldConfig(**w.__dict__), self.sim.world.init
        self._world_confined = False  # the start-up world is the node's own; LoadWorld's are in sim.worlds_dir
        services = {
            "get_simulator_features": (sim_srv.GetSimulatorFeatures, self._features),
            "reset_simulation": (sim_srv.ResetSimulation, self._reset),
            "step_simulation": (sim_srv.StepSimulation, self._step),
            "get_simulation_state": (sim_srv.GetSimulationState, self._get_state),
            "set_simulation_state": (sim_srv.SetSimulationState, self._set_state),
            "get_spawnables": (sim_srv.GetSpawnables, self._spawnables),
            "get_available_worlds": (sim_srv.GetAvailableWorlds, self._available_worlds),
            "get_current_world": (sim_srv.GetCurrentWorld, self._current_world),
            "load_world": (sim_srv.LoadWorld, self._load_world),
        }
        if self.has_entities:
            services.update({
                "spawn_entity": (sim_srv.SpawnEntity, self._spawn),
                "delete_entity": (sim_srv.DeleteEntity, self._delete),
                "get_entities": (sim_srv.GetEntities, self._entities),
                "get_entities_states": (sim_srv.GetEntitiesStates, self._entities_states),
                "get_entity_state": (sim_srv.GetEntityState, self._entity_state),
                "set_entity_state": (sim_srv.SetEntityState, self._set_entity_state),
                "get_entity_info": (sim_srv.GetEntityInfo, self._entity_info),
                "get_entity_bounds": (sim_srv.GetEntityBounds, self._entity_bounds),
            })
        for name, (typ, handler) in services.items():
            node.create_service(typ, f"~/{name}", self._guarded(handler), callback_group=callback_group)
        self._action = ActionServer(node, sim_action.SimulateSteps, "~/simulate_steps", self._simulate_steps,
                                    cancel_callback=lambda _h: CancelResponse.ACCEPT, callback_group=callback_group)
        node.get_logger().info(f"simulation_interfaces: {len(services)} services and simulate_steps under "
                               f"{node.get_fully_qualified_name()}/; spawnables in {self.spawnables_dir}, "
                               f"worlds in {self.worlds_dir}")

    @property
    def has_entities(self) -> bool:
        return hasattr(self.sim, "spawn_entity")

    # -- helpers ---------------------------------------------------------------------------
    def _guarded(self, handler):
        """A callback that answers RESULT_OPERATION_FAILED for anything unexpected (a bug, a
        corrupt file) instead of taking the node down."""

        def call(req, res):
            try:
                return handler(req, res)
            except Exception as exc:  # noqa: BLE001 - the node must survive any request
                self.node.get_logger().error(f"{handler.__name__} failed ({type(exc).__name__}): {exc}")
                if hasattr(res, "result"):
                    _set(res, sim_msg.Result.RESULT_OPERATION_FAILED, f"internal error ({type(exc).__name__}): {exc}")
                return res

        return call

    def _frame_pose(self, frame_id: str, pose_msg, what: str) -> np.ndarray:
        """A pose in ``frame_id`` ("", "world", the map frame or an entity's name) as a 4x4 in the
        map frame; :class:`SpatiaError` if invalid or the frame is unknown."""
        local = cv.pose_to_matrix(pose_msg)
        if frame_id in (*_WORLD_FRAMES, self.node.config.sim.map_frame):
            return local
        if self.has_entities and any(e.name == frame_id for e in self.sim.entities()):
            return self.sim.entity(frame_id).pose @ local
        raise SpatiaError(f"{what}: unknown frame {frame_id!r} (use '', 'world', "
                          f"{self.node.config.sim.map_frame!r} or an entity's name)")

    def _state(self) -> int:
        S = sim_msg.SimulationState
        if not self.node.paused:
            return S.STATE_PLAYING
        return S.STATE_STOPPED if self._stopped_at == self.sim.frame_index else S.STATE_PAUSED

    def _pause(self, paused: bool) -> None:
        from std_srvs.srv import Trigger

        self.node._set_paused(paused, Trigger.Response())

    def _publish_memory(self) -> None:
        self.node._publish_memory(force=True)

    # -- simulator -------------------------------------------------------------------------
    def features(self) -> list[int]:
        """Exactly the SimulatorFeatures this node supports."""
        F = sim_msg.SimulatorFeatures
        out = [F.SIMULATION_RESET, F.SIMULATION_RESET_TIME, F.SIMULATION_RESET_STATE, F.SIMULATION_RESET_SPAWNED,
               F.SIMULATION_STATE_GETTING, F.SIMULATION_STATE_SETTING, F.SIMULATION_STATE_PAUSE,
               F.STEP_SIMULATION_SINGLE, F.STEP_SIMULATION_MULTIPLE, F.STEP_SIMULATION_ACTION,
               F.WORLD_LOADING, F.WORLD_INFO_GETTING, F.AVAILABLE_WORLDS, F.SPAWNABLES]
        if self.has_entities:
            out += [F.SPAWNING, F.DELETING, F.ENTITY_BOUNDS, F.ENTITY_BOUNDS_BOX, F.ENTITY_STATE_GETTING,
                    F.ENTITY_STATE_SETTING, F.ENTITY_INFO_GETTING]
        return sorted(out)

    def _features(self, req, res):
        res.features.features = self.features()
        res.features.spawn_formats = ["ply"] if self.has_entities else []
        res.features.custom_info = ("spatia_ros world_sim: a generative world simulator; entities are point-cloud "
                                    "objects in its spatial memory; one step = one produced frame (README, ROS 2)")
        return res

    def _get_state(self, req, res):
        res.state.state = self._state()
        return _ok(res)

    def _set_state(self, req, res):
        S, R = sim_msg.SimulationState, sim_srv.SetSimulationState.Response
        target, current = req.state.state, self._state()
        if target == current:
            return _set(res, R.ALREADY_IN_TARGET_STATE, f"already in state {target}")
        if target == S.STATE_PLAYING:
            self._pause(False)
            self._stopped_at = None
        elif target == S.STATE_PAUSED:
            if current == S.STATE_STOPPED:
                return _set(res, R.INCORRECT_TRANSITION, "pausing a stopped simulation (play or step it instead)")
            self._pause(True)
        elif target == S.STATE_STOPPED:
            self._pause(True)  # answers once a frame in production is published
            done, message = self._reset_scopes(time=True, state=True, spawned=True)
            if not done:
                return _set(res, R.STATE_TRANSITION_ERROR, message)
            self._stopped_at = self.sim.frame_index
        elif target == S.STATE_QUITTING:
            return _set(res, sim_msg.Result.RESULT_FEATURE_UNSUPPORTED, "quitting is not supported: stop the node")
        else:
            return _set(res, R.INCORRECT_TRANSITION, f"state {target} cannot be set (only playing, paused, stopped)")
        return _ok(res)

    def _reset(self, req, res):
        Q = sim_srv.ResetSimulation.Request
        scope = req.scope
        if scope in (Q.SCOPE_DEFAULT, Q.SCOPE_ALL):
            scope = Q.SCOPE_TIME | Q.SCOPE_STATE | Q.SCOPE_SPAWNED
        if scope & ~(Q.SCOPE_TIME | Q.SCOPE_STATE | Q.SCOPE_SPAWNED):
            return _set(res, sim_msg.Result.RESULT_FEATURE_UNSUPPORTED,
                        f"scope {req.scope}: supported are TIME (1), STATE (2), SPAWNED (4), their sums, and ALL (255)")
        done, message = self._reset_scopes(time=bool(scope & Q.SCOPE_TIME), state=bool(scope & Q.SCOPE_STATE),
                                           spawned=bool(scope & Q.SCOPE_SPAWNED))
        if not done:
            return _set(res, sim_msg.Result.RESULT_OPERATION_FAILED, message)
        if self.node.paused and scope == Q.SCOPE_TIME | Q.SCOPE_STATE | Q.SCOPE_SPAWNED:
            self._stopped_at = self.sim.frame_index  # paused and fully reset: stopped
        return _ok(res, message)

    def _reset_scopes(self, time: bool, state: bool, spawned: bool) -> tuple[bool, str]:
        """Apply the reset scopes under the simulator's lock: (done, message)."""
        note = ""
        with self._lock, self.sim.lock:
            try:
                kept = [] if spawned or not self.has_entities else self.sim.entities()
                if spawned and self.has_entities:
                    for e in self.sim.entities():
                        self.sim.delete_entity(e.name)
                    self._spawned.clear()
                if state:
                    self._reload(self._world_cfg, self._world_confined)
                    self._world_init = self.sim.world.init
                    present = {e.name for e in self.sim.entities()} if self.has_entities else set()
                    lost = []
                    for e in kept:
                        ply, pose = self._spawned.get(e.name, (None, e.pose))
                        if e.name in present:
                            self.sim.set_entity_pose(e.name, pose)
                        elif ply is None or not self._spawn_file(e.name, ply, pose):
                            lost.append(e.name)
                            self._spawned.pop(e.name, None)
                    if lost:  # made by edit_memory from points: nothing to re-create them from
                        note = f"entities not made by spawn_entity could not be re-created: {', '.join(lost)}"
                if time:
                    self.sim.sim_time_ns = 0
                    self.sim.command_velocity(0.0, 0.0, 0.0)  # a command stamped before the jump expires now
            except (SpatiaError, _Answer) as exc:
                return False, str(exc)
        self._publish_memory()
        return True, note

    # -- stepping --------------------------------------------------------------------------
    def _check_steps(self, steps: int) -> str:
        S = sim_msg.SimulationState
        if self._state() not in (S.STATE_PAUSED, S.STATE_STOPPED):
            return "the simulation is playing: pause it first (set_simulation_state PAUSED)"
        if not 1 <= steps <= self.max_steps:
            return f"steps must be 1 to {self.max_steps}, got {steps}"
        return ""

    def _run_steps(self, steps: int, feedback=None, cancelled=lambda: False):
        self._stopped_at = None  # stepping a stopped simulation leaves it paused
        return self.node._queue(self._Job(count=steps, feedback=feedback),
                                timeout=60.0 + _STEP_TIMEOUT_PER_FRAME * steps, cancelled=cancelled)

    def _step(self, req, res):
        problem = self._check_steps(int(req.steps))
        if problem:
            return _set(res, sim_msg.Result.RESULT_OPERATION_FAILED, problem)
        job = self._run_steps(int(req.steps))
        if job.error:
            return _set(res, sim_msg.Result.RESULT_OPERATION_FAILED, f"{job.error} after {job.produced} step(s)")
        return _ok(res, f"{job.produced} step(s)")

    def _simulate_steps(self, handle):
        A = sim_action.SimulateSteps
        result, steps = A.Result(), int(handle.request.steps)
        problem = self._check_steps(steps)
        if problem:
            _set(result, sim_msg.Result.RESULT_OPERATION_FAILED, problem)
            handle.abort()
            return result

        def feedback(done, total):
            handle.publish_feedback(A.Feedback(completed_steps=done, remaining_steps=total - done))

        job = self._run_steps(steps, feedback, cancelled=lambda: handle.is_cancel_requested)
        if not job.error:
            _set(result, sim_msg.Result.RESULT_OK, f"{job.produced} step(s)")
            handle.succeed()
        elif handle.is_cancel_requested:
            _set(result, sim_msg.Result.RESULT_OK, f"cancelled after {job.produced} step(s)")
            handle.canceled()
        else:
            _set(result, sim_msg.Result.RESULT_OPERATION_FAILED, f"{job.error} after {job.produced} step(s)")
            handle.abort()
        return result

    # -- entities --------------------------------------------------------------------------
    def _entity_error(self, res, exc, codes: dict) -> object:
        """Answer an :class:`EntityError` (``.reason``) with the code ``codes`` maps it to."""
        reason = getattr(exc, "reason", "")
        code = codes.get(reason, sim_msg.Result.RESULT_NOT_FOUND if reason == "unknown"
                         else sim_msg.Result.RESULT_OPERATION_FAILED)
        return _set(res, code, str(exc))

    def _spawn(self, req, res):
        R = sim_srv.SpawnEntity.Response
        uri, text = req.entity_resource.uri, req.entity_resource.resource_string
        if not uri and not text:
            return _set(res, R.NO_RESOURCE, "entity_resource has neither a uri nor a resource_string")
        if not uri:
            return _set(res, sim_msg.Result.RESULT_FEATURE_UNSUPPORTED,
                        "resource_string is not supported: spawn a PLY file of get_spawnables by uri")
        if req.entity_namespace and not _NAMESPACE_RE.match(req.entity_namespace):
            return _set(res, R.NAMESPACE_INVALID, f"entity_namespace {req.entity_namespace!r} is not a ROS namespace")
        path = self._spawnable_path(uri)
        if path is None:
            return _set(res, sim_msg.Result.RESULT_NOT_FOUND, self._not_spawnable(uri))
        if path.suffix.lower() != ".ply":
            return _set(res, R.UNSUPPORTED_FORMAT, f"uri {uri!r}: only .ply files can be spawned")
        name = req.name
        if not name and not req.allow_renaming:
            return _set(res, R.NAME_INVALID, "an empty name needs allow_renaming")
        try:
            pose = self._frame_pose(req.initial_pose.header.frame_id, req.initial_pose.pose, "initial_pose")
        except SpatiaError as exc:
            return _set(res, R.INVALID_POSE, str(exc))
        with self._lock:
            taken = {e.name for e in self.sim.entities()}
            if name in taken and not req.allow_renaming:
                return _set(res, R.NAME_NOT_UNIQUE, f"an entity named {name!r} exists")
            if not name or name in taken:
                base = name or re.sub(r"[^A-Za-z0-9_/-]", "_", path.stem)[:56] or "entity"
                name = base if base not in taken else next(
                    f"{base}_{i}" for i in range(1, len(taken) + 2) if f"{base}_{i}" not in taken)
            try:
                if not self._spawn_file(name, path, pose):
                    return _set(res, sim_msg.Result.RESULT_NOT_FOUND, self._not_spawnable(uri))
            except SpatiaError as exc:
                if getattr(exc, "reason", None) is None:  # the file: unreadable, not a point cloud
                    return _set(res, R.RESOURCE_PARSE_ERROR, str(exc))
                return self._entity_error(res, exc, {"exists": R.NAME_NOT_UNIQUE, "bad_name": R.NAME_INVALID,
                                                     "bad_pose": R.INVALID_POSE, "empty": R.RESOURCE_PARSE_ERROR})
        res.entity_name = name
        self._publish_memory()
        return _ok(res)

    def _delete(self, req, res):
        try:
            self.sim.delete_entity(req.entity)
        except SpatiaError as exc:
            return self._entity_error(res, exc, {})
        self._spawned.pop(req.entity, None)
        self._publish_memory()
        return _ok(res)

    def _filtered(self, filters) -> list:
        """Entities matching ``filters`` (name regex, bounds overlap); SpatiaError(code, text)."""
        B = sim_msg.Bounds
        if filters.categories or filters.tags.tags:
            raise _Answer(sim_msg.Result.RESULT_FEATURE_UNSUPPORTED, "category and tag filters are not supported")
        try:
            pattern = re.compile(filters.filter) if filters.filter else None
        except re.error as exc:
            raise _Answer(sim_msg.Result.RESULT_OPERATION_FAILED, f"filter {filters.filter!r}: {exc}") from None
        b = filters.bounds
        pts = np.array([[p.x, p.y, p.z] for p in b.points], dtype=np.float64).reshape(-1, 3)
        if b.type == B.TYPE_EMPTY:
            overlaps = None
        elif b.type == B.TYPE_BOX and len(pts) == 2:
            blo, bhi = pts.min(axis=0), pts.max(axis=0)
            overlaps = lambda lo, hi: bool(np.all(lo <= bhi) and np.all(blo <= hi))  # noqa: E731
        elif b.type == B.TYPE_SPHERE and len(pts) == 2:
            c, r = pts[0], pts[1, 0]
            overlaps = lambda lo, hi: bool(np.linalg.norm(np.clip(c, lo, hi) - c) <= r)  # noqa: E731
        elif b.type == B.TYPE_CONVEX_HULL:
            raise _Answer(sim_msg.Result.RESULT_FEATURE_UNSUPPORTED, "convex-hull bounds filters are not supported")
        else:
            raise _Answer(sim_msg.Result.RESULT_OPERATION_FAILED, f"bounds of type {b.type} with {len(pts)} points")
        if not np.all(np.isfinite(pts)):
            raise _Answer(sim_msg.Result.RESULT_OPERATION_FAILED, "bounds points are not finite")
        out = []
        for e in sorted(self.sim.entities(), key=lambda e: e.name):
            if pattern is not None and not pattern.search(e.name):
                continue
            if overlaps is not None and (not e.n_voxels or not overlaps(np.asarray(e.lo, float), np.asarray(e.hi, float))):
                continue
            out.append(e)
        return out

    def _entities(self, req, res):
        try:
            res.entities = [e.name for e in self._filtered(req.filters)]
        except _Answer as ans:
            return _set(res, ans.code, ans.text)
        return _ok(res)

    def _entities_states(self, req, res):
        try:
            found = self._filtered(req.filters)
        except _Answer as ans:
            return _set(res, ans.code, ans.text)
        res.entities = [e.name for e in found]
        res.states = [self._state_msg(e) for e in found]
        return _ok(res)

    def _state_msg(self, info):
        state = sim_msg.EntityState()
        state.header = cv.header(self.node.config.sim.map_frame, self.sim.sim_time_ns)
        state.pose = cv.matrix_to_pose(np.asarray(info.pose, dtype=np.float64))
        return state  # twist and acceleration stay zero: entities are static objects

    def _entity_state(self, req, res):
        try:
            res.state = self._state_msg(self.sim.entity(req.entity))
        except SpatiaError as exc:
            return self._entity_error(res, exc, {})
        return _ok(res)

    def _set_entity_state(self, req, res):
        R = sim_srv.SetEntityState.Response
        st = req.state
        try:
            self.sim.entity(req.entity)
        except SpatiaError as exc:
            return self._entity_error(res, exc, {})
        moving = [st.twist.linear, st.twist.angular] if req.set_twist else []
        moving += [st.acceleration.linear, st.acceleration.angular] if req.set_acceleration else []
        if any(v.x or v.y or v.z for v in moving):
            return _set(res, sim_msg.Result.RESULT_OPERATION_FAILED,
                        f"{req.entity!r} is a static object: only a zero twist or acceleration can be set")
        if req.set_pose:
            try:
                pose = self._frame_pose(st.header.frame_id, st.pose, "state.pose")
                self.sim.set_entity_pose(req.entity, pose)
            except SpatiaError as exc:
                reason = getattr(exc, "reason", "bad_pose")
                if reason == "bad_pose":
                    return _set(res, R.INVALID_POSE, str(exc))
                return self._entity_error(res, exc, {})
            self._publish_memory()
        return _ok(res)

    def _entity_info(self, req, res):
        try:
            e = self.sim.entity(req.entity)
        except SpatiaError as exc:
            return self._entity_error(res, exc, {})
        res.info.category.category = sim_msg.EntityCategory.CATEGORY_STATIC_OBJECT
        ply = self._spawned.get(e.name, (None,))[0]
        source = f"spawnable {ply.relative_to(self.spawnables_dir)}" if ply else (e.source or "points")
        res.info.description = f"{e.n_voxels} voxels from {source}, scale {e.scale:g}"
        return _ok(res)

    def _entity_bounds(self, req, res):
        from geometry_msgs.msg import Vector3

        try:
            e = self.sim.entity(req.entity)
        except SpatiaError as exc:
            return self._entity_error(res, exc, {})
        if not e.n_voxels:  # wholly covered by another entity or edited away: nothing of it to bound
            res.bounds.type = sim_msg.Bounds.TYPE_EMPTY
            return _ok(res, f"{req.entity!r} has no voxels in the memory now")
        lo, hi = _local_box(e)
        res.bounds.type = sim_msg.Bounds.TYPE_BOX
        res.bounds.points = [Vector3(x=float(v[0]), y=float(v[1]), z=float(v[2])) for v in (hi, lo)]
        return _ok(res)

    def _not_spawnable(self, uri: str) -> str:
        return f"uri {uri!r} is not a file inside sim.spawnables_dir ({self.spawnables_dir}); see get_spawnables"

    def _spawn_file(self, name: str, path: Path, pose: np.ndarray) -> bool:
        """Spawn ``name`` from the PLY ``path`` of sim.spawnables_dir, opened without a
        check-then-open race (:func:`open_inside`); False if it is no longer a file in there."""
        try:
            with open_inside(path, [self.spawnables_dir]) as pinned:
                if pinned is None or not pinned.is_file():
                    return False
                self.sim.spawn_entity(name, ply=str(pinned), pose=pose)
        except FileFormatError as exc:
            if not path.exists():
                return False
            raise exc
        self._spawned[name] = (path, pose)
        return True

    def _spawnable_path(self, uri: str) -> Path | None:
        """The file ``uri`` names (``file://``, absolute or relative to ``sim.spawnables_dir``) if
        it is a file inside that folder (symlinks resolved), else None."""
        path = resolve_inside(_strip_file_uri(uri), [self.spawnables_dir], base=self.spawnables_dir)
        return path if path is not None and path.is_file() else None

    def _spawnables(self, req, res):
        res.spawnables = []
        if self.has_entities and self.spawnables_dir.is_dir():
            for path in sorted(self.spawnables_dir.rglob("*")):
                inside = resolve_inside(path, [self.spawnables_dir])
                if path.suffix.lower() == ".ply" and inside is not None and inside.is_file():
                    item = sim_msg.Spawnable(description=f"point cloud {path.name}")
                    item.entity_resource.uri = str(path.relative_to(self.spawnables_dir))
                    res.spawnables.append(item)
        ignored = [s for s in req.sources if s]
        return _ok(res, f"sources searched: sim.spawnables_dir only; ignored: {', '.join(ignored)}" if ignored else "")

    # -- worlds ----------------------------------------------------------------------------
    @staticmethod
    def _world_resource(kind: str, path: str, seed: int = 0):
        w = sim_msg.WorldResource()
        if kind == "builtin":
            w.name, w.world_resource.uri = "builtin", f"builtin:{seed}" if seed else "builtin"
            w.description, w.tags = f"the procedural room, seed {seed}", ["builtin"]
        else:
            w.name, w.world_resource.uri = Path(path).stem or kind, path
            w.description, w.tags = f"{kind} world", [kind]
        return w

    def _reload(self, cfg: WorldConfig, confined: bool) -> None:
        """``WorldSimulator.reset(cfg)``; a world of sim.worlds_dir (``confined``) is opened there
        first without a check-then-open race (:func:`open_inside`), the loader reading the opened one."""
        if not confined or cfg.source == "builtin":
            self.sim.reset(cfg)
            return
        with open_inside(cfg.path, [self.worlds_dir]) as pinned:
            if pinned is None:
                raise _Answer(sim_msg.Result.RESULT_NOT_FOUND, self._not_a_world(cfg.path))
            self.sim.reset(WorldConfig(**{**cfg.__dict__, "path": str(pinned)}))

    def _not_a_world(self, uri: str) -> str:
        return f"world {uri!r} is not inside sim.worlds_dir ({self.worlds_dir}); see get_available_worlds"

    def _world_path(self, uri: str) -> Path | None:
        return resolve_inside(_strip_file_uri(uri), [self.worlds_dir], base=self.worlds_dir)

    def _available_worlds(self, req, res):
        from spatia_core.worlds import resolve_source

        if req.filter.tags:
            return _set(res, sim_msg.Result.RESULT_FEATURE_UNSUPPORTED, "world tag filters are not supported")
        worlds = [self._world_resource("builtin", "")]
        if self.worlds_dir.is_dir():
            for path in sorted(self.worlds_dir.iterdir()):
                full = self._world_path(str(path))
                if full is None or full == self.worlds_dir.resolve():
                    continue
                try:
                    kind = resolve_source(WorldConfig(source="auto", path=str(full)))
                except SpatiaError:
                    continue
                if kind == "image_depth" or (kind == "rgbd_folder" and not (full / "depth").is_dir()):
                    continue  # a lone image (needs a depth file), a folder of something else
                worlds.append(self._world_resource(kind, str(path.relative_to(self.worlds_dir))))
        res.worlds = worlds
        ignored = [s for s in req.additional_sources if s]
        return _ok(res, f"sources searched: sim.worlds_dir only; ignored: {', '.join(ignored)}" if ignored else "")

    def _current_world(self, req, res):
        if self.sim.world.init is not self._world_init:  # reloaded by our own reset_world service
            res.world = self._world_resource(self.sim.world.init.source, "")
            res.world.description = "loaded by the reset_world service"
        else:
            res.world = self._world
        return _ok(res)

    def _load_world(self, req, res):
        from spatia_core.worlds import resolve_source

        R = sim_srv.LoadWorld.Response
        uri, text = req.world_resource.uri, req.world_resource.resource_string
        if not uri and not text:
            return _set(res, R.NO_RESOURCE, "world_resource has neither a uri nor a resource_string")
        if not uri:
            return _set(res, sim_msg.Result.RESULT_FEATURE_UNSUPPORTED, "resource_string worlds are not supported")
        m = re.fullmatch(r"builtin(?::(\d+))?", uri)
        if m:
            cfg = WorldConfig(**{**self.node.config.world.__dict__, "source": "builtin", "path": "",
                                 "seed": int(m.group(1) or 0)})
            world = self._world_resource("builtin", "", cfg.seed)
        else:
            path = self._world_path(uri)
            if path is None or not path.exists() or path == self.worlds_dir.resolve():
                return _set(res, sim_msg.Result.RESULT_NOT_FOUND, self._not_a_world(uri))
            try:
                kind = resolve_source(WorldConfig(source="auto", path=str(path)))
            except SpatiaError as exc:
                return _set(res, R.UNSUPPORTED_FORMAT, str(exc))
            cfg = WorldConfig(**{**self.node.config.world.__dict__, "source": kind, "path": str(path), "depth_path": ""})
            world = self._world_resource(kind, uri)
        was_paused = self.node.paused
        self._pause(True)
        with self._lock, self.sim.lock:
            confined = cfg.source != "builtin"
            try:
                self._reload(cfg, confined)  # a new memory: no entities; on failure the old world stays
            except (SpatiaError, _Answer) as exc:
                if not was_paused:
                    self._pause(False)
                if isinstance(exc, _Answer):
                    return _set(res, exc.code, exc.text)
                return _set(res, R.RESOURCE_PARSE_ERROR, str(exc))
            self._spawned.clear()
            self._world_confined = confined
            self.sim.sim_time_ns = 0
            self.sim.command_velocity(0.0, 0.0, 0.0)
            self._world, self._world_cfg, self._world_init = world, cfg, self.sim.world.init
            self._stopped_at = self.sim.frame_index
        self._publish_memory()
        res.world = world
        return _ok(res, f"{world.name}: {len(self.sim.world.memory)} voxels; stopped")


class _Answer(Exception):
    """A result code and message to answer with."""

    def __init__(self, code: int, text: str):
        super().__init__(text)
        self.code, self.text = code, text


def _set(res, code: int, message: str = ""):
    res.result.result, res.result.error_message = code, message
    return res


def _ok(res, message: str = ""):
    return _set(res, sim_msg.Result.RESULT_OK, message)


def _strip_file_uri(uri: str) -> str:
    return uri[len("file://"):] if uri.startswith("file://") else uri


def _local_box(info) -> tuple[np.ndarray, np.ndarray]:
    """The entity's axis-aligned box in its own frame (the standard's bounds are relative to the
    entity), from its world box ``lo``/``hi``: the box around the world box's corners."""
    lo, hi = np.asarray(info.lo, dtype=np.float64), np.asarray(info.hi, dtype=np.float64)
    corners = np.array([[x, y, z, 1.0] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])
    local = (invert_pose(np.asarray(info.pose, dtype=np.float64)) @ corners.T).T[:, :3]
    return local.min(axis=0), local.max(axis=0)


__all__ = ["MISSING", "SimInterfaces", "attach"]
