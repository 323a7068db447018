"""Plain OpenMM molecular dynamics of a :class:`molfree.systems.System`, frames returned as arrays."""
from __future__ import annotations

import numpy as np
from tqdm import tqdm


def run_md(system, picoseconds: float, seed: int, timestep_fs: float = 1.0, frame_interval_ps: float = 0.1,
           friction_per_ps: float = 1.0):
    """Langevin MD of a :class:`molfree.systems.System`; returns frame positions ``[F, N, 3]`` (nm) and energies ``[F]`` (kJ/mol)."""
    import openmm
    from openmm import app, unit

    integrator = openmm.LangevinMiddleIntegrator(system.temperature * unit.kelvin, friction_per_ps / unit.picosecond,
                                                 timestep_fs * unit.femtosecond)
    integrator.setRandomNumberSeed(seed)
    platform = openmm.Platform.getPlatformByName("CPU")
    simulation = app.Simulation(system.topology, system.system, integrator, platform, {"Threads": "1"})
    simulation.context.setPositions(system.positions)
    simulation.minimizeEnergy(maxIterations=200)
    simulation.context.setVelocitiesToTemperature(system.temperature * unit.kelvin, seed)
    steps_per_frame = max(1, round(frame_interval_ps * 1000 / timestep_fs))
    n_frames = max(1, round(picoseconds / frame_interval_ps))
    frames, energies = [], []
    for _ in tqdm(range(n_frames), desc=f"MD {system.name}", unit="frame"):
        simulation.step(steps_per_frame)
        state = simulation.context.getState(getPositions=True, getEnergy=True)
        frames.append(state.getPositions(asNumpy=True).value_in_unit(unit.nanometer))
        energies.append(state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole))
    return np.asarray(frames), np.asarray(energies)


def nve_energy_drift(system, positions, temperature: float, timestep_fs: float = 0.5, n_steps: int = 2000,
                     report_every: int = 10, platform: str = "Reference", seed: int = 1) -> dict:
    """Velocity-Verlet NVE of an ``openmm.System`` from ``positions`` ``[N, 3]`` (nm), velocities drawn at ``temperature`` (K).

    Returns ``drift`` (kJ/mol/ns per atom, slope of a linear fit of the total energy against time),
    ``std`` (kJ/mol, of the total energy), ``times`` (ps) and ``totals`` (kJ/mol) every ``report_every`` steps.
    """
    import openmm
    from openmm import unit

    integrator = openmm.VerletIntegrator(timestep_fs * unit.femtosecond)
    context = openmm.Context(system, integrator, openmm.Platform.getPlatformByName(platform))
    context.setPositions(np.asarray(positions) * unit.nanometer)
    context.setVelocitiesToTemperature(temperature * unit.kelvin, seed)
    times, totals = [], []
    for _ in range(n_steps // report_every + 1):
        state = context.getState(getEnergy=True)
        times.append(state.getTime().value_in_unit(unit.picosecond))
        totals.append((state.getPotentialEnergy() + state.getKineticEnergy()).value_in_unit(unit.kilojoule_per_mole))
        integrator.step(report_every)
    times, totals = np.asarray(times), np.asarray(totals)
    slope = np.polyfit(times, totals, 1)[0]  # kJ/mol/ps
    return {"drift": float(slope * 1000.0 / system.getNumParticles()), "std": float(np.std(totals)),
            "times": times, "totals": totals}
