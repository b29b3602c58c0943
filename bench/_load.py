"""How busy the machine is before and during a benchmark, and whether a result may be a PASS.

Every benchmark here measures time on a shared machine, so each one reports the load beside its
numbers and refuses to call a met target a PASS when the machine was busy when it started:

    watch = LoadWatch()            # samples the machine for 2 s before the run
    watch.track(node_pid)          # processes of the benchmark itself (this one is tracked already)
    ... run ...
    load = watch.end()             # LoadReport: before and during
    print(load.line())
    print(load.verdict(p50 <= 20))  # PASS / MISS / NOT A PASS: machine busy (load X)

The rule (``LoadReport.busy``): the machine counts as busy when, before the run,
  * the 1-minute load average is above 0.5 per core, or
  * other processes (everything but this benchmark's own processes) kept more than 0.5 cores per
    core busy, i.e. more than half the machine, over the 2 s sample (``/proc/stat`` minus the
    benchmark's own ``/proc/<pid>/stat`` times).
The load average reacts within seconds but smooths over a minute, so the CPU sample catches a
machine that just became busy, and the load average one that is busy on and off. "During"
numbers are reported, not judged: the benchmark itself loads the machine.

Linux only (``/proc``); elsewhere the numbers are reported as unknown and nothing is a PASS.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field

#: A run whose machine was busier than this before it started is not a PASS (see module docstring).
LOAD_PER_CORE = 0.5
OTHERS_PER_CORE = 0.5
SAMPLE_S = 2.0
_HZ = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _cpu_jiffies() -> tuple[int, int] | None:
    """(busy, total) jiffies of all CPUs since boot, from /proc/stat."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    total = sum(fields[:8])  # guest time is already inside user
    return total - idle, total


def _proc_jiffies(pid: int) -> int:
    """CPU jiffies (user + system) of one process, not of its children; 0 if it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            rest = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0
    return int(rest[11]) + int(rest[12])  # utime stime


def _loadavg() -> tuple[float, float, float] | None:
    try:
        return os.getloadavg()
    except OSError:
        return None


@dataclass
class LoadReport:
    """The machine's load before and during one benchmark run."""

    cores: int
    loadavg_before: list[float] | None  # 1, 5, 15 minutes
    others_cores_before: float | None  # cores kept busy by other processes in the sample before
    loadavg_after: list[float] | None
    busy_cores_during: float | None  # all processes, over the run
    own_cores_during: float | None  # this benchmark's processes
    others_cores_during: float | None
    seconds: float
    rule: str = field(default=f"busy if load1 > {LOAD_PER_CORE}/core or others > {OTHERS_PER_CORE} cores/core before start")

    @property
    def busy(self) -> bool:
        """True when the machine was too busy before the run for a result to count (module docstring)."""
        if self.loadavg_before is None or self.others_cores_before is None:
            return True
        return (self.loadavg_before[0] > LOAD_PER_CORE * self.cores
                or self.others_cores_before > OTHERS_PER_CORE * self.cores)

    def verdict(self, met: bool) -> str:
        """``PASS``, ``MISS``, or ``NOT A PASS: machine busy (load X)`` for a met target on a busy machine."""
        if not met:
            return "MISS" + (f" (machine busy, load {self._load1()})" if self.busy else "")
        return f"NOT A PASS: machine busy (load {self._load1()})" if self.busy else "PASS"

    def _load1(self) -> str:
        return "unknown" if self.loadavg_before is None else f"{self.loadavg_before[0]:.2f}"

    def line(self) -> str:
        def f(v, fmt="{:.2f}"):
            return "?" if v is None else fmt.format(v)
        la = self.loadavg_before or [None] * 3
        lb = self.loadavg_after or [None] * 3
        return (f"load before: loadavg {f(la[0])} {f(la[1])} {f(la[2])} on {self.cores} cores "
                f"({f(None if la[0] is None else la[0] / self.cores)}/core), other processes {f(self.others_cores_before)} cores"
                f"{'  [BUSY]' if self.busy else ''}; during {self.seconds:.0f} s: loadavg {f(lb[0])}, "
                f"all {f(self.busy_cores_during)} cores = this bench {f(self.own_cores_during)} + others "
                f"{f(self.others_cores_during)}")

    def as_dict(self) -> dict:
        d = asdict(self)
        d["busy"] = self.busy
        return d


class LoadWatch:
    """Samples the machine for ``sample_s`` seconds now (the "before"), then times the run until
    :meth:`end`. This process is always counted as the benchmark's; add children with :meth:`track`."""

    def __init__(self, sample_s: float = SAMPLE_S, pids: tuple[int, ...] = ()):
        self.cores = os.cpu_count() or 1
        self._pids = {os.getpid(), *pids}
        self.loadavg_before = _loadavg()
        cpu0, own0, t0 = _cpu_jiffies(), self._own(), time.monotonic()
        time.sleep(sample_s)  # a measurement window, not a wait for a condition
        cpu1, own1, t1 = _cpu_jiffies(), self._own(), time.monotonic()
        self.others_cores_before = None
        if cpu0 and cpu1:
            # jiffies tick in 10 ms steps, per CPU: a short window can read a little over the
            # number of cores (2.02 of 2 seen on a full machine); no machine is busier than its cores
            others = (cpu1[0] - cpu0[0] - (own1 - own0)) / _HZ / (t1 - t0)
            self.others_cores_before = min(float(self.cores), max(0.0, others))
        self.begin()

    def _own(self) -> int:
        return sum(_proc_jiffies(p) for p in self._pids)

    def track(self, pid: int) -> None:
        """Count process ``pid`` (e.g. the node under test) as part of the benchmark from now on."""
        if pid not in self._pids:
            self._pids.add(pid)
            self._own_start[pid] = _proc_jiffies(pid)

    def begin(self) -> None:
        """(Re)start the measured window (called by the constructor)."""
        self._cpu_start, self._t_start = _cpu_jiffies(), time.monotonic()
        self._own_start = {p: _proc_jiffies(p) for p in self._pids}
        self._own_last = dict(self._own_start)

    def poll(self) -> None:
        """Remember the tracked processes' CPU so far (call before a tracked child exits)."""
        for p in self._pids:
            j = _proc_jiffies(p)
            if j:
                self._own_last[p] = j

    def end(self) -> LoadReport:
        self.poll()
        cpu, t = _cpu_jiffies(), time.monotonic()
        dt = max(t - self._t_start, 1e-9)
        own = min(float(self.cores), sum(self._own_last.get(p, 0) - self._own_start.get(p, 0) for p in self._pids) / _HZ / dt)
        busy = None
        if cpu and self._cpu_start:
            # /proc/stat and /proc/<pid>/stat tick separately: over a short window the machine's
            # busy time can read a jiffy or two below the benchmark's own (0.96 vs 1.03 cores over
            # 0.1 s seen); the machine is at least as busy as the benchmark and at most its cores
            busy = min(float(self.cores), max(own, (cpu[0] - self._cpu_start[0]) / _HZ / dt))
        la = _loadavg()
        return LoadReport(
            cores=self.cores,
            loadavg_before=None if self.loadavg_before is None else [round(v, 2) for v in self.loadavg_before],
            others_cores_before=None if self.others_cores_before is None else round(self.others_cores_before, 2),
            loadavg_after=None if la is None else [round(v, 2) for v in la],
            busy_cores_during=None if busy is None else round(busy, 2),
            own_cores_during=round(own, 2),
            others_cores_during=None if busy is None else round(max(0.0, busy - own), 2),
            seconds=round(dt, 1),
        )
