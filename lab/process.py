"""Simple physical processes behind the lab's PLCs.

Each process reads its setpoints and commands (holding registers, coils) from the PLC's
register image and writes what its sensors would measure (input registers, discrete inputs,
and outputs the controller drives itself), one ``step(dt)`` at a time. The same code runs in
the synthetic generator (simulated time, stepped lazily before each request is answered) and
in the live lab's PLC processes (real time), so both serve the same kind of values.

Registers are found by the names the site's asset policy gives them (``lab/sites/*.yaml``),
so a process only depends on names, never on addresses. Values are scaled integers as the
site file documents; every value is clamped to 0..65535 before it is stored.
"""

from __future__ import annotations

import math
import random
from typing import ClassVar

from sentinel.lab.config import Tag

TABLES = ("coils", "discretes", "holding", "input")


class Image:
    """The four Modbus tables of one PLC (bits are stored as 0/1 ints)."""

    __slots__ = ("coils", "discretes", "holding", "input")

    def __init__(self, coils: int, discretes: int, holding: int, input: int) -> None:
        self.coils = [0] * coils
        self.discretes = [0] * discretes
        self.holding = [0] * holding
        self.input = [0] * input

    def table(self, name: str) -> list[int]:
        return getattr(self, name)  # type: ignore[no-any-return]


class Process:
    """Base class: ``init`` sets plausible start values, ``step`` advances ``dt`` seconds."""

    kind = ""
    tags: tuple[str, ...] = ()

    def __init__(
        self, image: Image, tags: dict[str, Tag], params: dict[str, float], rng: random.Random
    ) -> None:
        missing = [t for t in self.tags if t not in tags]
        if missing:
            raise ValueError(f"process {self.kind}: the PLC has no register named {missing}")
        self.image = image
        self._tags = tags
        self.params = params
        self.rng = rng
        self.t = 0.0

    def get(self, name: str, index: int = 0) -> int:
        tag = self._tags[name]
        return self.image.table(tag.table)[tag.start + index]

    def set(self, name: str, value: float, index: int = 0) -> None:
        tag = self._tags[name]
        self.image.table(tag.table)[tag.start + index] = min(max(round(value), 0), 0xFFFF)

    def noise(self, sigma: float) -> float:
        return self.rng.gauss(0.0, sigma)

    def init(self) -> None:
        raise NotImplementedError

    def step(self, dt: float) -> None:
        raise NotImplementedError


PROCESSES: dict[str, type[Process]] = {}


def register(cls: type[Process]) -> type[Process]:
    if cls.kind in PROCESSES:
        raise ValueError(f"duplicate process kind {cls.kind!r}")
    PROCESSES[cls.kind] = cls
    return cls


def make_process(
    kind: str, image: Image, tags: dict[str, Tag], params: dict[str, float], rng: random.Random
) -> Process:
    cls = PROCESSES.get(kind)
    if cls is None:
        raise ValueError(f"unknown process {kind!r} (known: {', '.join(sorted(PROCESSES))})")
    return cls(image, tags, params, rng)


def _approach(value: float, target: float, tau: float, dt: float) -> float:
    """First-order lag: ``value`` moves toward ``target`` with time constant ``tau``."""
    return target + (value - target) * math.exp(-dt / tau)


@register
class Ventilation(Process):
    """Operating-theatre air handling: temperature, humidity, positive pressure, airflow."""

    kind = "ventilation"
    tags = (
        "temp_setpoint",
        "humidity_setpoint",
        "pressure_setpoint",
        "fan_speed_cmd",
        "temp_kp",
        "temp_ti",
        "temperature",
        "humidity",
        "pressure_diff",
        "supply_airflow",
        "fan_speed",
        "extract_airflow",
        "heating_valve",
        "cooling_valve",
        "supply_fan_run",
        "extract_fan_run",
        "theatre_occupied",
        "filter_dirty",
        "door_open",
        "fan_fault",
        "fire_damper_closed",
    )

    def init(self) -> None:
        for name, value in (
            ("temp_setpoint", 210),
            ("humidity_setpoint", 500),
            ("pressure_setpoint", 150),
            ("fan_speed_cmd", 80),
            ("temp_kp", 120),
            ("temp_ti", 240),
            ("supply_fan_run", 1),
            ("extract_fan_run", 1),
            ("theatre_occupied", 1),
        ):
            self.set(name, value)
        self.temp = 210.0 + self.noise(2)
        self.hum = 500.0 + self.noise(10)
        self.fan = 80.0
        self.pressure = 150.0
        self.door = 0.0  # seconds the door stays open
        self._publish()

    def step(self, dt: float) -> None:
        self.t += dt
        ambient = self.params.get("ambient", 240.0)
        running = self.get("supply_fan_run") and self.get("extract_fan_run")
        self.fan = _approach(self.fan, self.get("fan_speed_cmd") if running else 0, 8.0, dt)
        error = self.get("temp_setpoint") - self.temp
        valve = max(min(error * self.get("temp_kp") / 40.0, 100.0), -100.0)
        self.heating, self.cooling = max(valve, 0.0), max(-valve, 0.0)
        target_t = self.get("temp_setpoint") + (ambient - self.get("temp_setpoint")) * 0.05
        self.temp = _approach(self.temp, target_t, 120.0, dt) + self.noise(0.15) * math.sqrt(dt)
        self.hum = _approach(self.hum, self.get("humidity_setpoint"), 300.0, dt)
        self.hum += self.noise(0.6) * math.sqrt(dt)
        if self.door <= 0 and self.rng.random() < self.params.get("door_rate", 0.004) * dt:
            self.door = self.rng.uniform(4, 20)
        self.door = max(self.door - dt, 0.0)
        target_p = self.get("pressure_setpoint") * self.fan / 80.0 * (0.3 if self.door else 1.0)
        self.pressure = _approach(self.pressure, target_p, 3.0, dt) + self.noise(1.5)
        self._publish()

    def _publish(self) -> None:
        airflow = 2400.0 * self.fan / 100.0
        self.set("temperature", self.temp)
        self.set("humidity", self.hum)
        self.set("pressure_diff", self.pressure)
        self.set("supply_airflow", airflow + self.noise(8))
        self.set("extract_airflow", airflow * 0.88 + self.noise(8))
        self.set("fan_speed", self.fan)
        self.set("heating_valve", getattr(self, "heating", 0.0))
        self.set("cooling_valve", getattr(self, "cooling", 0.0))
        self.set("door_open", 1 if self.door > 0 else 0)
        self.set("filter_dirty", 1 if self.t > 86400 * 30 else 0)


@register
class MedicalGas(Process):
    """Medical-gas pipeline pressures (kPa), oxygen flow and automatic bank changeover."""

    kind = "medical_gas"
    tags = (
        "o2_low_alarm",
        "o2_high_alarm",
        "vacuum_low_alarm",
        "o2_pressure",
        "air_pressure",
        "vacuum",
        "n2o_pressure",
        "o2_flow",
        "manifold_bank",
        "zone_valve_theatre1",
        "o2_low",
        "o2_high",
        "vacuum_low",
        "bank_changeover",
    )

    def init(self) -> None:
        self.set("o2_low_alarm", 355)
        self.set("o2_high_alarm", 460)
        self.set("vacuum_low_alarm", 48)
        self.set("zone_valve_theatre1", 1)
        self.bank = 1
        self.bank_level = self.rng.uniform(0.4, 1.0)
        self.o2 = 410.0
        self.flow = 40.0
        self._publish()

    def step(self, dt: float) -> None:
        self.t += dt
        self.flow = max(_approach(self.flow, 40 + 25 * math.sin(self.t / 3600.0), 60, dt), 5)
        self.flow += self.noise(0.4) * math.sqrt(dt)
        self.bank_level -= self.flow * dt / 5.0e6
        if self.bank_level <= 0.02:
            self.bank = 3 - self.bank
            self.bank_level = 1.0
            self.set("bank_changeover", 1)
        self.o2 = _approach(self.o2, 410 - self.flow * 0.05, 20.0, dt) + self.noise(0.3)
        self._publish()

    def _publish(self) -> None:
        self.set("o2_pressure", self.o2)
        self.set("air_pressure", 400 + self.noise(0.8))
        self.set("vacuum", 60 + self.noise(0.5))
        self.set("n2o_pressure", 405 + self.noise(0.5))
        self.set("o2_flow", self.flow)
        self.set("manifold_bank", self.bank)
        self.set("o2_low", 1 if self.o2 < self.get("o2_low_alarm") else 0)
        self.set("o2_high", 1 if self.o2 > self.get("o2_high_alarm") else 0)
        self.set("vacuum_low", 1 if self.get("vacuum") < self.get("vacuum_low_alarm") else 0)


@register
class Substation(Process):
    """Bay controller: breakers follow their close commands; measurements follow the load."""

    kind = "substation"
    tags = (
        "breaker_q1_close",
        "breaker_q2_close",
        "breaker_q3_close",
        "breaker_q4_close",
        "breaker_q1_closed",
        "breaker_q2_closed",
        "breaker_q3_closed",
        "breaker_q4_closed",
        "protection_trip",
        "voltage_ab",
        "voltage_bc",
        "voltage_ca",
        "current_l1",
        "current_l2",
        "current_l3",
        "frequency",
        "active_power",
        "reactive_power",
        "power_factor",
        "overcurrent_pickup",
        "undervoltage_pickup",
        "load_limit",
    )
    BREAKERS = ("q1", "q2", "q3", "q4")

    def init(self) -> None:
        for b in self.BREAKERS:
            self.set(f"breaker_{b}_close", 1)
            self.set(f"breaker_{b}_closed", 1)
        self.set("overcurrent_pickup", 600)
        self.set("undervoltage_pickup", 990)
        self.set("load_limit", 8000)
        self.load = self.params.get("load_kw", 5200.0)
        self.freq = 5000.0
        self._publish()

    def step(self, dt: float) -> None:
        self.t += dt
        for b in self.BREAKERS:  # the breaker mechanism follows its command
            self.set(f"breaker_{b}_closed", self.get(f"breaker_{b}_close"))
        base = self.params.get("load_kw", 5200.0) * (1 + 0.15 * math.sin(self.t / 7200.0))
        self.load = _approach(self.load, base, 60.0, dt) + self.noise(6) * math.sqrt(dt)
        self.freq = _approach(self.freq, 5000.0, 30.0, dt) + self.noise(0.6) * math.sqrt(dt)
        self._publish()

    def _publish(self) -> None:
        closed = sum(self.get(f"breaker_{b}_closed") for b in self.BREAKERS)
        load = self.load * closed / 4.0
        volts = 1100 - load / 400.0
        amps = load / (math.sqrt(3) * volts / 100.0 * 0.95) if volts else 0.0
        for name in ("voltage_ab", "voltage_bc", "voltage_ca"):
            self.set(name, volts + self.noise(0.8))
        for name in ("current_l1", "current_l2", "current_l3"):
            self.set(name, amps * (1 + self.noise(0.01)))
        self.set("frequency", self.freq)
        self.set("active_power", load)
        self.set("reactive_power", load * 0.33)
        self.set("power_factor", 950 + self.noise(2))
        self.set("protection_trip", 1 if amps > self.get("overcurrent_pickup") else 0)


@register
class TapChanger(Process):
    """On-load tap changer with automatic voltage regulation (deadband and time delay)."""

    kind = "tap_changer"
    tags = (
        "voltage_setpoint",
        "deadband",
        "time_delay",
        "tap_position",
        "bus_voltage",
        "tap_operations",
        "oil_temperature",
        "auto_mode",
        "tap_raise",
        "tap_lower",
        "tap_in_progress",
        "end_stop_high",
        "end_stop_low",
    )

    def init(self) -> None:
        self.set("voltage_setpoint", 1100)
        self.set("deadband", 15)
        self.set("time_delay", 30)
        self.set("auto_mode", 1)
        self.tap = 9
        self.ops = self.rng.randint(1000, 20000)
        self.out_of_band = 0.0
        self.grid = 1100.0
        self.oil = 450.0
        self._publish()

    def step(self, dt: float) -> None:
        self.t += dt
        self.grid = _approach(self.grid, 1100 + 25 * math.sin(self.t / 1800.0), 90.0, dt)
        self.grid += self.noise(0.7) * math.sqrt(dt)
        volts = self.grid + (self.tap - 9) * 12.5
        move = 0
        if self.get("auto_mode"):
            error = volts - self.get("voltage_setpoint")
            if abs(error) > self.get("deadband"):
                self.out_of_band += dt
                if self.out_of_band >= self.get("time_delay"):
                    move = -1 if error > 0 else 1
                    self.out_of_band = 0.0
            else:
                self.out_of_band = 0.0
        else:
            move = self.get("tap_raise") - self.get("tap_lower")
            self.set("tap_raise", 0)
            self.set("tap_lower", 0)
        if move and 1 <= self.tap + move <= 17:
            self.tap += move
            self.ops += 1
        self.oil = _approach(self.oil, 450 + 30 * math.sin(self.t / 10800.0), 600.0, dt)
        self.set("tap_in_progress", 1 if move else 0)
        self._publish(volts)

    def _publish(self, volts: float | None = None) -> None:
        self.set("tap_position", self.tap)
        self.set("bus_voltage", volts if volts is not None else self.grid)
        self.set("tap_operations", self.ops)
        self.set("oil_temperature", self.oil + self.noise(0.5))
        self.set("end_stop_high", 1 if self.tap == 17 else 0)
        self.set("end_stop_low", 1 if self.tap == 1 else 0)


@register
class TunnelVentilation(Process):
    """Jet fans of a metro tunnel: speeds follow setpoints, CO/NO2 follow trains and airflow."""

    kind = "tunnel_ventilation"
    tags = (
        "fan1_speed_setpoint",
        "fan2_speed_setpoint",
        "fan3_speed_setpoint",
        "fan4_speed_setpoint",
        "co_alarm_threshold",
        "ventilation_mode",
        "fan1_speed",
        "fan2_speed",
        "fan3_speed",
        "fan4_speed",
        "co_ppm",
        "no2_ppb",
        "air_velocity",
        "tunnel_temperature",
        "fan_run",
        "fan_fault",
        "fire_alarm",
    )

    def init(self) -> None:
        for i in range(4):
            self.set(f"fan{i + 1}_speed_setpoint", 60)
            self.set("fan_run", 1, i)
        self.set("co_alarm_threshold", 100)
        self.set("ventilation_mode", 1)
        self.speeds = [60.0] * 4
        self.co = 12.0
        self.no2 = 80.0
        self.train = 0.0
        self._publish()

    def step(self, dt: float) -> None:
        self.t += dt
        for i in range(4):
            target = self.get(f"fan{i + 1}_speed_setpoint") if self.get("fan_run", i) else 0
            self.speeds[i] = _approach(self.speeds[i], target, 15.0, dt)
        if self.train <= 0 and self.rng.random() < dt / 150.0:  # a train every ~2.5 minutes
            self.train = 40.0
        self.train = max(self.train - dt, 0.0)
        extraction = sum(self.speeds) / 400.0
        self.co = _approach(self.co, 8 + (25 if self.train else 0) * (1.2 - extraction), 40, dt)
        self.no2 = _approach(self.no2, 60 + (90 if self.train else 0) * (1.2 - extraction), 60, dt)
        self._publish()

    def _publish(self) -> None:
        for i in range(4):
            self.set(f"fan{i + 1}_speed", self.speeds[i])
        self.set("co_ppm", self.co + self.noise(0.3))
        self.set("no2_ppb", self.no2 + self.noise(1.5))
        self.set("air_velocity", sum(self.speeds) / 40.0 + (15 if self.train else 0))
        self.set("tunnel_temperature", 245 + self.noise(0.5))


@register
class TrafficSignals(Process):
    """A four-phase fixed-time signal plan with green split, driving the signal-head coils.

    Heads are 12 coils: main-road red/amber/green, side-road red/amber/green, pedestrian
    main red/green, pedestrian side red/green.
    """

    kind = "traffic_signals"
    tags = (
        "signal_plan",
        "cycle_time",
        "main_green_split",
        "phase",
        "phase_elapsed",
        "cycle_count",
        "detector_main",
        "detector_side",
        "signal_heads",
        "conflict_fault",
        "ped_request_main",
        "ped_request_side",
    )
    # phase -> heads (main R, A, G, side R, A, G, ped-main R, G, ped-side R, G, spare, spare)
    HEADS: ClassVar[dict[int, tuple[int, ...]]] = {
        1: (0, 0, 1, 1, 0, 0, 1, 0, 0, 1, 0, 0),
        2: (0, 1, 0, 1, 0, 0, 1, 0, 1, 0, 0, 0),
        3: (1, 0, 0, 0, 0, 1, 0, 1, 1, 0, 0, 0),
        4: (1, 0, 0, 0, 1, 0, 1, 0, 1, 0, 0, 0),
    }

    def init(self) -> None:
        self.set("signal_plan", 1)
        self.set("cycle_time", 90)
        self.set("main_green_split", 55)
        self.phase = 1
        self.elapsed = 0.0
        self.cycles = self.rng.randint(0, 5000)
        self.main = self.rng.randint(0, 60000)
        self.side = self.rng.randint(0, 30000)
        self._publish()

    def _duration(self, phase: int) -> float:
        cycle = self.get("cycle_time")
        green = cycle - 8.0
        split = self.get("main_green_split") / 100.0
        return {1: green * split, 2: 4.0, 3: green * (1 - split), 4: 4.0}[phase]

    def step(self, dt: float) -> None:
        self.t += dt
        self.elapsed += dt
        while self.elapsed >= self._duration(self.phase):
            self.elapsed -= self._duration(self.phase)
            self.phase = self.phase % 4 + 1
            if self.phase == 1:
                self.cycles += 1
        if self.phase == 1 and self.rng.random() < 0.5 * dt:
            self.main += 1
        if self.phase == 3 and self.rng.random() < 0.2 * dt:
            self.side += 1
        self._publish()

    def _publish(self) -> None:
        for i, on in enumerate(self.HEADS[self.phase]):
            self.set("signal_heads", on, i)
        self.set("phase", self.phase)
        self.set("phase_elapsed", self.elapsed)
        self.set("cycle_count", self.cycles & 0xFFFF)
        self.set("detector_main", self.main & 0xFFFF)
        self.set("detector_side", self.side & 0xFFFF)
