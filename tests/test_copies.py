"""The released code's copies stay copies (issue 26, item 7): transformers' check_copies, for SpotMAE.

launch/hf/modeling_spotmae.py and processing_spotmae.py are copied into every release and may import only torch,
numpy and transformers, so they repeat parts of the project. Each repeated function or class is marked, as in
transformers, by a comment on the line above it:

    # Copied from pretrain.lgi_former.Attention
    # Copied from finetune.heads.model.SpottingHead with CHANNELS->SPOTTING_CHANNELS

and must equal its source's text (decorators, docstring and comments included) after the marker's `A->B`
replacements (whole words). A marker whose source is gone, or a copy that drifted, fails here naming both.
"""
from __future__ import annotations

import ast
import re
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
RELEASED = ("launch/hf/modeling_spotmae.py", "launch/hf/processing_spotmae.py")
MARKER = re.compile(r"^(?P<indent>\s*)# Copied from (?P<target>[\w.]+)(?: with (?P<rules>.+))?$")
# what must stay marked: a marker deleted by mistake would otherwise pass silently
EXPECTED = {
    "launch/hf/modeling_spotmae.py": {"pretrain.lgi_former.sinusoid_positions", "pretrain.lgi_former.Attention",
                                      "pretrain.lgi_former.LGIBlock", "finetune.heads.model.pool_features",
                                      "finetune.heads.model.SpottingHead"},
    "launch/hf/processing_spotmae.py": {
        "finetune.windows.Window", "finetune.windows.sample_step", "finetune.windows.window_starts",
        "finetune.windows.make_window", "finetune.windows.video_windows", "data.faces.motion_view.face_mask",
        "data.faces.motion_view.divide_lighting", "data.faces.motion_view.contrast_view",
        "data.faces.motion_view.running_mean", "data.faces.motion_view.ViewStream",
        "data.faces.motion_view.window_view", "data.faces.motion_view.stream_windows",
        "data.clips.augment.channel_values", "data.clips.augment.normalise"},
}


def definitions(path: Path) -> dict[str, ast.AST]:
    """Every function and class of a module by qualified name (Class.method included)."""
    found = {}

    def visit(node, prefix):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                found[prefix + child.name] = child
                visit(child, f"{prefix}{child.name}.")

    visit(ast.parse(path.read_text(), str(path)), "")
    return found


def source_text(lines: list[str], node: ast.AST) -> str:
    """A definition's text, decorators included, dedented."""
    first = min([node.lineno, *(d.lineno for d in getattr(node, "decorator_list", []))])
    return textwrap.dedent("\n".join(lines[first - 1:node.end_lineno]))


def replace_names(text: str, rules: str | None) -> str:
    """Apply a marker's `A->B, C->D` (whole words)."""
    for rule in filter(None, (r.strip() for r in (rules or "").split(","))):
        old, new = (part.strip() for part in rule.split("->"))
        text = re.sub(rf"\b{re.escape(old)}\b", new, text)
    return text


def resolve(target: str) -> tuple[Path, str]:
    """'pkg.module.Name[.method]' -> (the module's file, the qualified name inside it)."""
    parts = target.split(".")
    for i in range(len(parts) - 1, 0, -1):
        path = REPO.joinpath(*parts[:i]).with_suffix(".py")
        if path.is_file():
            return path, ".".join(parts[i:])
    raise AssertionError(f"no module of the project holds {target}")


def marked_copies(path: Path) -> list[tuple[str, str | None, str, int]]:
    """(target, rules, the copy's text, marker line) of every marker in a released file."""
    lines = path.read_text().splitlines()
    starts = {min([n.lineno, *(d.lineno for d in getattr(n, "decorator_list", []))]): n
              for n in definitions(path).values()}
    out = []
    for number, line in enumerate(lines, 1):
        found = MARKER.match(line)
        if found:
            node = starts.get(number + 1)
            assert node is not None, f"{path.name}:{number}: the marker is not right above a def or class"
            out.append((found["target"], found["rules"], source_text(lines, node), number))
    return out


def drifted(path: Path) -> list[str]:
    """One line per marked copy that differs from its source (or whose source is gone)."""
    problems = []
    for target, rules, copy, line in marked_copies(path):
        source, name = resolve(target)
        nodes = definitions(source)
        if name not in nodes:
            problems.append(f"{path.name}:{line}: {target} no longer exists")
        elif copy != replace_names(source_text(source.read_text().splitlines(), nodes[name]), rules):
            problems.append(f"{path.name}:{line} differs from {target} ({source.relative_to(REPO)}): copy the "
                            "source again, or drop the marker if the difference is meant")
    return problems


@pytest.mark.parametrize("relative", RELEASED)
def test_every_marked_copy_equals_its_source(relative):
    assert {target for target, *_ in marked_copies(REPO / relative)} == EXPECTED[relative]
    assert drifted(REPO / relative) == []


def test_the_check_sees_a_drifted_copy_and_applies_renames(tmp_path):
    released = (REPO / "launch/hf/modeling_spotmae.py").read_text()
    copy = tmp_path / "modeling_copy.py"
    copy.write_text(released.replace("dim // self.heads", "dim // (self.heads + 0)"))
    assert drifted(copy) == [f"modeling_copy.py:{line} differs from pretrain.lgi_former.Attention "
                             "(pretrain/lgi_former.py): copy the source again, or drop the marker if the difference "
                             "is meant" for target, _, _, line in marked_copies(copy)
                             if target == "pretrain.lgi_former.Attention"]
    # a rename rule is needed where the copy renames: without it the head differs
    copy.write_text(released.replace(" with CHANNELS->SPOTTING_CHANNELS", ""))
    assert [p for p in drifted(copy) if "SpottingHead" in p]
    assert replace_names("SPOTTING_CHANNELS, CHANNELS", "CHANNELS->X") == "SPOTTING_CHANNELS, X"
