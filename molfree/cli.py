"""The ``molfree`` command line: one subcommand per workflow; errors are one line and a non-zero exit."""
from __future__ import annotations

import argparse
import sys

from . import __version__


def _cmd_demo(args: argparse.Namespace) -> None:
    from .workflows.demo import run_demo

    run_demo(args.out, md_picoseconds=args.md_ps, seed=args.seed)


def _cmd_systems(args: argparse.Namespace) -> None:
    from . import systems

    if args.name is None:
        for name in systems.names():
            print(name)
        return
    system = systems.load(args.name)
    print(f"{system.name}: {system.system.getNumParticles()} particles, {system.temperature:g} K")
    print(system.description)


def _cmd_data_sample(args: argparse.Namespace) -> None:
    from .workflows.potential_data import run_sample

    run_sample(args.out, args.temperatures, args.frames, system=args.system, pdb=args.pdb, smiles=args.smiles,
               forcefield=args.forcefield, interval_ps=args.interval_ps, seed=args.seed)


def _cmd_data_label(args: argparse.Namespace) -> None:
    from .workflows.potential_data import make_reference, run_label

    reference = make_reference(args.reference, system=args.system, pdb=args.pdb, forcefield=args.forcefield,
                               charge=args.charge, multiplicity=args.multiplicity, method=args.method)
    run_label(args.input, args.out, reference, args.chunk_size)


def _cmd_train(args: argparse.Namespace) -> None:
    from pathlib import Path

    from .potentials.training import load_config, train

    run_dir = args.run_dir or str(Path("runs") / f"train-{Path(args.config).stem}")
    test = train(load_config(args.config), run_dir)["test"]
    if test["loss"] is not None:
        print(f"[molfree train] test energy MAE {test['energy_mae_mev_per_atom']:.2f} meV/atom, "
              f"force MAE {test['force_mae_mev_per_angstrom']:.1f} meV/Å")
    print(f"[molfree train] model, metrics.json and learning_curves.png in {run_dir}")


def _cmd_solvation(args: argparse.Namespace) -> None:
    import json
    from pathlib import Path

    from .freeenergy.hydration import (
        ELECTROSTATIC_STATES,
        SMILES_UNSUPPORTED,
        SamplingOptions,
        hydration_free_energy,
        solute_from_file,
    )
    from .freeenergy.hydration_neural_ti import NeuralTIOptions, neural_ti_hydration

    if args.solvent != "tip3p":
        raise ValueError(f"--solvent {args.solvent}: only tip3p is supported")
    if args.smiles:
        raise ValueError(SMILES_UNSUPPORTED)
    options = SamplingOptions(iterations=args.iterations, steps_per_iteration=args.steps_per_iteration,
                              equilibration_steps=args.equilibration_steps, threads=args.threads, seed=args.seed)
    if args.method != "mbar":  # checked before any sampling: `both` runs MBAR first
        neural_options = NeuralTIOptions(n_frames=args.frames, n_decoupled_frames=args.frames,
                                         training_steps=args.training_steps, insertions=args.insertions)
    if args.solute_file:
        solute, atoms = solute_from_file(args.solute_file, args.forcefield or [])
        name = Path(args.solute_file).stem
    else:
        solute, atoms, name = args.solute or "methane", None, args.solute or "methane"
    out = args.out or f"runs/solvation-{name}"
    results = {}
    if args.method in ("mbar", "both"):
        n_electrostatics = args.n_electrostatics or ELECTROSTATIC_STATES.get(name, 3)
        result = hydration_free_energy(solute, atoms, out=out, n_electrostatics=n_electrostatics,
                                       n_sterics=args.n_sterics, options=options, progress=not args.json)
        results["mbar"] = {"dG_kcal_mol": result.dG_kcal_mol, "error_kcal_mol": result.error_kcal_mol,
                           "min_neighbour_overlap": min(result.solvent.neighbour_overlap),
                           "temperature_K": result.temperature}
    if args.method in ("neural-ti", "both"):
        document = neural_ti_hydration(solute, atoms, out=out, options=neural_options, sampling=options,
                                       seed=args.seed or 0, progress=not args.json)
        results["neural-ti"] = {"dG_kcal_mol": document["dG_kcal_mol"], "error_kcal_mol": document["error_kcal_mol"],
                                "temperature_K": document["temperature_K"]}
    first = results["mbar" if "mbar" in results else "neural-ti"]
    if args.json:
        print(json.dumps({**first, "method": args.method, "solute": name, "solvent": args.solvent, "run_dir": out,
                          **({"neural_ti": results["neural-ti"]} if args.method == "both" else {})}))
    else:
        for method, values in results.items():
            print(f"[molfree solvation] ΔG_hyd({name}, {args.solvent}) = {values['dG_kcal_mol']:.2f} ± "
                  f"{values['error_kcal_mol']:.2f} kcal/mol ({method.upper() if method == 'mbar' else 'neural TI'}, "
                  f"{values['temperature_K']:g} K)")
        reports = [f"{out}/report.md"] * ("mbar" in results) + [f"{out}/neural-ti/report.md"] * ("neural-ti" in results)
        print(f"[molfree solvation] reports: {', '.join(reports)}")


def _add_data_parser(sub) -> None:
    data = sub.add_parser("data", help="training data for neural potentials: sample configurations, label them")
    data_sub = data.add_subparsers(dest="data_command", metavar="STEP", required=True)

    sample = data_sub.add_parser("sample", help="configurations from OpenMM MD (system or PDB) or RDKit (SMILES)")
    source = sample.add_mutually_exclusive_group(required=True)
    source.add_argument("--system", help="named system (see: molfree systems)")
    source.add_argument("--pdb", help="PDB file, parametrised with --forcefield")
    source.add_argument("--smiles", help="SMILES: perturbed RDKit/MMFF conformers (not a Boltzmann sample)")
    sample.add_argument("--temperatures", type=float, nargs="+", default=[300.0], help="K (default: 300)")
    sample.add_argument("--frames", type=int, default=100, help="frames per temperature (default: 100)")
    sample.add_argument("--interval-ps", type=float, default=0.5, help="MD time between frames (default: 0.5)")
    sample.add_argument("--seed", type=int, default=0)
    sample.add_argument("--out", required=True, help="extended-XYZ output (Å)")
    sample.set_defaults(func=_cmd_data_sample)

    label = data_sub.add_parser("label", help="reference energies and forces (resumable in chunks)")
    label.add_argument("input", help="extended-XYZ file of structures")
    label.add_argument("--reference", choices=("xtb", "openmm"), required=True)
    label.add_argument("--system", help="openmm: named system whose force field labels the data")
    label.add_argument("--pdb", help="openmm: PDB file parametrised with --forcefield")
    label.add_argument("--method", default="GFN2-xTB", help="xtb: tblite method (default: GFN2-xTB)")
    label.add_argument("--charge", type=int, default=0, help="xtb: total charge in e (default: 0)")
    label.add_argument("--multiplicity", type=int, default=1, help="xtb: spin multiplicity 2S+1 (default: 1)")
    label.add_argument("--chunk-size", type=int, default=50, help="structures per part file (default: 50)")
    label.add_argument("--out", required=True, help="labelled extended-XYZ output (eV, eV/Å)")
    label.set_defaults(func=_cmd_data_label)

    for parser in (sample, label):
        parser.add_argument("--forcefield", nargs="+",
                            help="OpenMM force-field files for --pdb (default: amber14-all.xml amber14/tip3p.xml)")


def _cmd_bg_train(args: argparse.Namespace) -> None:
    from .workflows.bg import BGSetup, run_train, summary

    overrides = {key: value for key, value in (
        ("system", args.system), ("temperature", args.temperature), ("reference_ps", args.reference_ps),
        ("ml_steps", args.ml_steps), ("kl_steps", args.kl_steps), ("n_samples", args.samples),
        ("umbrella_windows", args.umbrella_windows), ("umbrella_ps", args.umbrella_ps), ("seed", args.seed),
        ("threads", args.threads)) if value is not None}
    setup = BGSetup.quick(**overrides) if args.quick else BGSetup(**overrides)
    out = args.out or f"runs/bg-{setup.system}{'-quick' if args.quick else ''}"
    print(summary(run_train(setup, out)))
    print(f"[molfree bg train] samples, weights, ramachandran.png, metrics.json and report.md in {out}")


def _cmd_bg_sample(args: argparse.Namespace) -> None:
    from .workflows.bg import run_sample, summary

    print(summary(run_sample(args.run_dir, args.samples)))
    print(f"[molfree bg sample] samples.dcd, log_weights.npy, metrics.json and report.md rewritten in {args.run_dir}")


def _add_bg_parser(sub) -> None:
    bg = sub.add_parser("bg", help="Boltzmann generator for alanine dipeptide: train, sample")
    bg_sub = bg.add_subparsers(dest="bg_command", metavar="STEP", required=True)
    train = bg_sub.add_parser("train", help="reference replica exchange and φ umbrella sampling, ML then ML+KL "
                                            "training, samples, metrics (reruns resume)")
    train.add_argument("--system", choices=("alanine-dipeptide-implicit", "alanine-dipeptide-vacuum"),
                       help="default: alanine-dipeptide-implicit (amber96 + OBC1, no constraints)")
    train.add_argument("--temperature", type=float,
                       help="K (default: 300; the system's replica ladder is scaled with it)")
    train.add_argument("--quick", action="store_true", help="a few-minute CPU setup")
    train.add_argument("--reference-ps", type=float,
                       help="replica-exchange length per replica, ps (default: 300 implicit, 1200 vacuum)")
    train.add_argument("--ml-steps", type=int, help="maximum-likelihood steps")
    train.add_argument("--kl-steps", type=int, help="ML + reverse-KL steps")
    train.add_argument("--samples", type=int, help="flow samples to draw")
    train.add_argument("--umbrella-windows", type=int,
                       help="umbrella windows along φ for the minor basin (default 48; more if overlap is poor)")
    train.add_argument("--umbrella-ps", type=float, help="umbrella production per window, ps (default 20)")
    train.add_argument("--seed", type=int)
    train.add_argument("--threads", type=int, help="torch threads (default: 1)")
    train.add_argument("--out", help="run directory (default: runs/bg-<system>[-quick])")
    train.set_defaults(func=_cmd_bg_train)
    sample = bg_sub.add_parser("sample", help="draw new samples from a trained run; rewrite its metrics and report")
    sample.add_argument("--run-dir", required=True, help="directory of a `molfree bg train` run")
    sample.add_argument("--samples", type=int, help="number of samples (default: the run's setting)")
    sample.set_defaults(func=_cmd_bg_sample)


def _cmd_campaign(args: argparse.Namespace) -> None:
    import json

    from .campaign import load_campaign

    campaign = load_campaign(args.file)
    if args.campaign_command == "run":
        from .campaign.runner import run_campaign

        summary = run_campaign(campaign, cluster=args.cluster, workers=args.workers, progress=not args.quiet,
                               retry_failed=args.retry_failed)
        print(json.dumps(summary, indent=2))
    elif args.campaign_command == "status":
        from .campaign.runner import status_table
        from .campaign.store import Store

        store = Store(campaign.db_path)
        print(status_table(store))
        for row in store.jobs():
            if row["error"]:
                print(f"{row['status']:>8} {row['grp']} {row['key'][:12]} attempts={row['attempts']}: {row['error']}")
    elif args.campaign_command == "gather":
        from .campaign.report import gather, summarise

        results = gather(campaign)
        print(json.dumps({"groups": {g: r.get("status") for g, r in results.items()},
                          "summary": summarise(results)}, indent=2))
    else:
        from .campaign.report import write_report

        print(write_report(campaign, args.out))


def _add_campaign_parser(sub) -> None:
    campaign = sub.add_parser("campaign", help="batch campaigns (YAML): run on Dask locally or on SLURM/PBS, "
                                               "status, gather (MBAR), HTML report")
    campaign_sub = campaign.add_subparsers(dest="campaign_command", metavar="STEP", required=True)
    run = campaign_sub.add_parser("run", help="run the jobs whose results are not present and valid (resumable)")
    run.add_argument("--cluster", choices=("local", "slurm", "pbs"), help="default: the campaign's cluster.kind")
    run.add_argument("--workers", type=int, help="workers / batch jobs (default: the campaign's cluster.workers)")
    run.add_argument("--retry-failed", action="store_true", help="give jobs that used up their attempts new ones")
    run.add_argument("--quiet", action="store_true", help="no progress bar or status table")
    campaign_sub.add_parser("status", help="jobs per status, and errors")
    campaign_sub.add_parser("gather", help="analyse finished groups (MBAR over the λ windows)")
    report = campaign_sub.add_parser("report", help="write an HTML report (default: <campaign dir>/report.html)")
    report.add_argument("--out", help="HTML file")
    for parser in campaign_sub.choices.values():
        parser.add_argument("file", help="campaign YAML file")
    campaign.set_defaults(func=_cmd_campaign)


def _cmd_crystal_generate(args: argparse.Namespace) -> None:
    from .workflows.crystal import GenerateSetup, run_generate, summary

    if args.free == (args.composition is not None):
        raise ValueError("give either --composition or --free")
    generator = "flow" if args.free else args.generator
    setup = GenerateSetup(args.composition, calculator=args.calculator, n=args.n, seed=args.seed,
                          max_atoms=args.max_atoms, fmax=args.fmax, steps=args.steps, generator=generator,
                          model=args.model, sample_steps=args.sample_steps)
    out = args.out or f"runs/crystal-{args.composition or 'free'}-{args.calculator}-{generator}"
    print(summary(run_generate(setup, out)))
    print(f"[molfree crystal generate] CIFs, energy_volume.png, results.json and report.md in {out}")


def _cmd_crystal_train(args: argparse.Namespace) -> None:
    from .workflows.crystal import DataSetup, TrainSetup, run_train

    data = DataSetup(args.compositions, calculator=args.calculator, per_composition=args.per_composition,
                     max_atoms=args.max_atoms, fmax=args.fmax, steps=args.relax_steps, seed=args.seed)
    setup = TrainSetup(data, holdout=args.holdout, hidden=args.hidden, layers=args.layers, train_steps=args.train_steps,
                       batch_size=args.batch_size, lr=args.lr, checkpoint_every=args.checkpoint_every)
    out = args.out or f"runs/crystal-train-{args.calculator}"
    metrics = run_train(setup, out, progress=not args.quiet)
    print(f"[molfree crystal train] {metrics['n_train']} train / {metrics['n_test']} held-out crystals from "
          f"{metrics['data_cost']['relaxations']} relaxations; final loss {metrics['final_train_loss']:.4f}")
    print(f"[molfree crystal train] model.pt, metrics.json, learning_curve.png and data/ in {out}")


def _cmd_crystal_evaluate(args: argparse.Namespace) -> None:
    import json
    from pathlib import Path

    from .workflows.crystal import EvaluateSetup, run_evaluate

    data = args.data or str(Path(args.model).parent / "data" / "test.extxyz")
    setup = EvaluateSetup(args.model, data, calculator=args.calculator, n_samples=args.n_samples,
                          csp_samples=args.csp_samples, sample_steps=args.sample_steps, seed=args.seed)
    out = args.out or str(Path(args.model).parent / "evaluation")
    metrics = run_evaluate(setup, out)
    print(json.dumps({"generation": metrics["generation"], "csp": metrics["csp"]}, indent=2))
    print(f"[molfree crystal evaluate] metrics.json and report.md in {out}")


def _add_crystal_parser(sub) -> None:
    crystal = sub.add_parser("crystal", help="crystal structure generation: search or CrystalFlow, relax, symmetrise, "
                                             "rank; train and evaluate the generator")
    crystal_sub = crystal.add_subparsers(dest="crystal_command", metavar="STEP", required=True)
    calculators = "lj, emt, tersoff, born-mayer, chgnet or a molfree potential file (default: emt)"
    generate = crystal_sub.add_parser("generate", help="generate candidates (random search or CrystalFlow), relax, "
                                                      "dedupe, rank, write CIFs (reruns resume)")
    generate.add_argument("--composition", help="formula, e.g. NaCl (structure prediction)")
    generate.add_argument("--free", action="store_true",
                          help="free generation: cells drawn from the CrystalFlow's training cells (needs --model)")
    generate.add_argument("--generator", choices=("random", "flow"), default="random",
                          help="random structure search or a trained CrystalFlow (default: random)")
    generate.add_argument("--model", help="CrystalFlow model file from 'molfree crystal train'")
    generate.add_argument("--sample-steps", type=int, default=10, help="CrystalFlow Euler steps (default: 10)")
    generate.add_argument("--calculator", default="emt", help=calculators)
    generate.add_argument("-n", type=int, default=200, help="candidates (default: 200)")
    generate.add_argument("--max-atoms", type=int, default=8, help="atoms per cell at most (default: 8)")
    generate.add_argument("--fmax", type=float, default=0.01, help="force threshold, eV/Å (default: 0.01)")
    generate.add_argument("--steps", type=int, default=300, help="optimizer steps per relaxation (default: 300)")
    generate.add_argument("--seed", type=int, default=0)
    generate.add_argument("--out", help="run directory (default: runs/crystal-<composition>-<calculator>-<generator>)")
    generate.set_defaults(func=_cmd_crystal_generate)

    train = crystal_sub.add_parser("train", help="relax random starts of compositions into training data, train a "
                                                 "CrystalFlow (reruns resume)")
    train.add_argument("--compositions", nargs="+", required=True, help="formulas, e.g. CuPd CuPt AgAu")
    train.add_argument("--calculator", default="emt", help=calculators)
    train.add_argument("--per-composition", type=int, default=20, help="random starts relaxed per composition "
                                                                       "(default: 20)")
    train.add_argument("--max-atoms", type=int, default=8, help="atoms per cell at most (default: 8)")
    train.add_argument("--fmax", type=float, default=0.01, help="force threshold, eV/Å (default: 0.01)")
    train.add_argument("--relax-steps", type=int, default=300, help="optimizer steps per relaxation (default: 300)")
    train.add_argument("--holdout", type=float, default=0.2, help="held-out fraction of unique crystals (default: 0.2)")
    train.add_argument("--hidden", type=int, default=64, help="CrystalFlow width (default: 64)")
    train.add_argument("--layers", type=int, default=2, help="message-passing layers (default: 2)")
    train.add_argument("--train-steps", type=int, default=2000, help="Adam steps (default: 2000)")
    train.add_argument("--batch-size", type=int, default=32)
    train.add_argument("--lr", type=float, default=2e-3)
    train.add_argument("--checkpoint-every", type=int, default=100, help="steps between checkpoints (default: 100)")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--quiet", action="store_true", help="no progress bars")
    train.add_argument("--out", help="run directory (default: runs/crystal-train-<calculator>)")
    train.set_defaults(func=_cmd_crystal_train)

    evaluate = crystal_sub.add_parser("evaluate", help="CDVAE-style metrics of a CrystalFlow on held-out crystals")
    evaluate.add_argument("--model", required=True, help="model.pt from 'molfree crystal train'")
    evaluate.add_argument("--data", help="extxyz of held-out crystals (default: <model dir>/data/test.extxyz)")
    evaluate.add_argument("--calculator", help="for generated energies (default: the model's training calculator)")
    evaluate.add_argument("--n-samples", type=int, default=100, help="free generations (default: 100)")
    evaluate.add_argument("--csp-samples", type=int, default=1, help="CSP samples per held-out crystal (default: 1)")
    evaluate.add_argument("--sample-steps", type=int, default=10, help="CrystalFlow Euler steps (default: 10)")
    evaluate.add_argument("--seed", type=int, default=0)
    evaluate.add_argument("--out", help="directory for metrics.json and report.md (default: <model dir>/evaluation)")
    evaluate.set_defaults(func=_cmd_crystal_evaluate)


def _cmd_conformers(args: argparse.Namespace) -> None:
    from .workflows.conformers import SamplerOptions, run_conformers

    options = SamplerOptions(temperature=args.temperature, max_energy_evaluations=args.budget)
    out = args.out or f"runs/conformers-{args.energy if args.energy in ('mmff', 'xtb') else 'model'}"
    run_conformers(args.smiles, out, energy=args.energy, n=args.n, relax_method=args.relax,
                   rmsd_threshold=args.rmsd_threshold, options=options, reference_embeddings=args.reference_embeddings,
                   compare=not args.no_compare, seed=args.seed, progress=not args.quiet, reference=args.reference)
    print(f"[molfree conformers] conformers.sdf, metrics.json{'' if args.no_compare else ', etkdg.sdf, report.md'} "
          f"in {out}")


def _add_conformers_parser(sub) -> None:
    conformers = sub.add_parser("conformers", help="conformers from SMILES with the torsional adjoint sampler, "
                                                   "compared with RDKit ETKDG (coverage, AMR)")
    conformers.add_argument("smiles", help="the molecule, e.g. 'CC(C)Cc1ccc(cc1)[C@H](C)C(=O)O'")
    conformers.add_argument("--energy", default="mmff", help="mmff (RDKit MMFF94), xtb (GFN2-xTB via tblite) or a "
                                                             "molfree model file (default: mmff)")
    conformers.add_argument("-n", type=int, default=100, help="conformers to generate (default: 100)")
    conformers.add_argument("--relax", nargs="?", const="mmff", choices=("mmff", "energy"),
                            help="relax the conformers: mmff (RDKit MMFF94, the default with a bare --relax) or "
                                 "energy (L-BFGS on --energy)")
    conformers.add_argument("--rmsd-threshold", type=float, default=0.5,
                            help="deduplication threshold, heavy-atom RMSD in Å (default: 0.5)")
    conformers.add_argument("--temperature", type=float, default=1000.0,
                            help="sampling temperature, K (default: 1000; higher is more diverse)")
    conformers.add_argument("--budget", type=int, default=6000, help="training energy evaluations (default: 6000)")
    conformers.add_argument("--reference", choices=("etkdg", "md"), default="etkdg",
                            help="reference ensemble: etkdg (ETKDG embeddings) or md (1000 K Langevin MD frames 1 ps "
                                 "apart on --energy); both MMFF94-relaxed and deduplicated (default: etkdg)")
    conformers.add_argument("--reference-embeddings", type=int, default=500,
                            help="structures relaxed for the reference: ETKDG embeddings or MD frames (default: 500)")
    conformers.add_argument("--no-compare", action="store_true", help="skip the ETKDG baseline and reference")
    conformers.add_argument("--seed", type=int, default=0)
    conformers.add_argument("--out", help="run directory (default: runs/conformers-<energy>)")
    conformers.add_argument("--quiet", action="store_true", help="no progress bar")
    conformers.set_defaults(func=_cmd_conformers)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="molfree",
        description="Learned samplers, neural potentials and free energies for OpenMM and ASE.",
    )
    parser.add_argument("--version", action="version", version=f"molfree {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    demo = sub.add_parser("demo", help="alanine dipeptide MD with OpenMM, Energy cross-check, neighbor-list benchmark")
    demo.add_argument("--out", default="runs/demo", help="run directory (default: runs/demo)")
    demo.add_argument("--md-ps", type=float, default=50.0, help="MD length in ps (default: 50)")
    demo.add_argument("--seed", type=int, default=2026)
    demo.set_defaults(func=_cmd_demo)

    sys_ = sub.add_parser("systems", help="list the shipped systems, or describe one")
    sys_.add_argument("name", nargs="?", help="system name")
    sys_.set_defaults(func=_cmd_systems)

    _add_data_parser(sub)
    _add_bg_parser(sub)
    _add_campaign_parser(sub)
    _add_crystal_parser(sub)
    _add_conformers_parser(sub)

    train = sub.add_parser("train", help="train an equivariant potential from a YAML config")
    train.add_argument("config", help="YAML config (keys: see molfree.potentials.training)")
    train.add_argument("--run-dir", help="run directory; reruns resume from its checkpoint "
                                         "(default: runs/train-<config name>)")
    train.set_defaults(func=_cmd_train)

    solvation = sub.add_parser("solvation", help="hydration free energy: alchemical HREX + MBAR and/or neural TI")
    source = solvation.add_mutually_exclusive_group()
    source.add_argument("--solute", help="shipped solute: methane (GAFF) or water (TIP3P); default: methane")
    source.add_argument("--solute-file", help="PDB or SDF solute, parametrised with --forcefield")
    source.add_argument("--smiles", help="not supported (needs conda-only openff-toolkit/AmberTools)")
    solvation.add_argument("--forcefield", nargs="+", help="OpenMM force-field XML file(s) for --solute-file")
    solvation.add_argument("--solvent", default="tip3p", help="solvent model (default: tip3p)")
    solvation.add_argument("--method", default="mbar", choices=("mbar", "neural-ti", "both"),
                           help="mbar: decoupling by HREX; neural-ti: learned λ-path from endpoint MD frames "
                                "(rigid solute); both: side by side (default: mbar)")
    solvation.add_argument("--frames", type=int, default=50, help="neural TI: coupled and decoupled MD frames, "
                                                                   "each, 1 ps apart (default: 50)")
    solvation.add_argument("--training-steps", type=int, default=400,
                           help="neural TI: score-matching steps (default: 400)")
    solvation.add_argument("--insertions", type=int, default=8000,
                           help="neural TI: test insertions per frame (default: 8000)")
    solvation.add_argument("--iterations", type=int, default=1000, help="replica-exchange iterations (default: 1000)")
    solvation.add_argument("--steps-per-iteration", type=int, default=500, help="2 fs steps (default: 500)")
    solvation.add_argument("--equilibration-steps", type=int, default=5000, help="per replica (default: 5000)")
    solvation.add_argument("--n-electrostatics", type=int,
                           help="λ_elec states (default: 3; 6 for water, whose ±0.8 e charges need more)")
    solvation.add_argument("--n-sterics", type=int, default=9, help="λ_sterics states (default: 9)")
    solvation.add_argument("--threads", type=int, help="CPU threads (default: all)")
    solvation.add_argument("--seed", type=int)
    solvation.add_argument("--out", help="run directory; reruns resume (default: runs/solvation-<solute>)")
    solvation.add_argument("--json", action="store_true", help="print the result as JSON")
    solvation.set_defaults(func=_cmd_solvation)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        args.func(args)
    except (ValueError, FileNotFoundError, ImportError) as exc:
        print(f"molfree {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"molfree {args.command}: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
