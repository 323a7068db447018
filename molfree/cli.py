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
