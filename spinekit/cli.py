"""The ``spinekit`` command line: one subcommand per stage.

Each subcommand lives in its own module, which exposes ``add_arguments(parser)`` and
``run(args) -> int``; modules are imported only when their command runs, so ``spinekit --help``
stays fast and a missing optional dependency only affects its own command.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from spinekit.errors import SpinekitError

#: subcommand -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("spinekit.demo", "generate a phantom and run every stage on it"),
    "phantom": ("spinekit.phantom_cli", "generate a synthetic spine CT/MRI with exact ground truth"),
    "import-seg": ("spinekit.label_import", "convert a TotalSegmentator/VerSe/SPINEPS label map to ours"),
    "segment": ("spinekit.segment.cli", "segment vertebrae, discs, canal and paraspinal muscles"),
    "train": ("spinekit.segment.train_cli", "train (or fine-tune) a segmentation network"),
    "measure": ("spinekit.morphometry.cli", "measure heights, areas, centroids, curvature, muscle fat"),
    "evaluate": ("spinekit.morphometry.evaluate_cli", "agreement between two segmentations or measurement sets"),
    "register": ("spinekit.register.cli", "register a follow-up scan to baseline vertebra by vertebra"),
    "biomech": ("spinekit.biomech.cli", "build and solve a subject-specific OpenSim spine model"),
    "cohort": ("spinekit.cohort", "run the pipeline over a manifest of subjects (Dask)"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="spinekit", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False).set_defaults(_module=module)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    # First pass finds the command, second pass parses its own arguments.
    known, _ = parser.parse_known_args(argv)
    module = importlib.import_module(known._module)
    command_parser = argparse.ArgumentParser(prog=f"spinekit {known.command}", description=COMMANDS[known.command][1])
    command_parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    module.add_arguments(command_parser)
    position = argv.index(known.command)
    args = command_parser.parse_args(argv[:position] + argv[position + 1 :])
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    try:
        return int(module.run(args) or 0)
    except SpinekitError as exc:
        print(f"spinekit {known.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
