"""Every `magworld` command in the README's and the docs' bash blocks parses with the real CLI, so
that a user copying one never meets an option that was renamed or removed. (Parsing only: what
the commands do is tested where each lives.)"""

import re
import shlex
from pathlib import Path

import pytest

from worldmodel.cli import build_parser

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def magworld_commands(text: str) -> list[str]:
    """The `magworld ...` command lines of the ```bash blocks of a Markdown text, continuations
    (trailing backslash) joined, comments dropped."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        current = ""
        for raw in block.splitlines():
            line = re.sub(r"\s+#.*$", "", raw).rstrip() if not raw.lstrip().startswith("#") else ""
            if not line and not current:
                continue
            current += " " + line.rstrip("\\").strip()
            if not line.endswith("\\"):
                commands.append(current.strip())
                current = ""
    return [c for c in commands if re.search(r"(^|\s)(\S*/)?magworld\s", c)]


def argv_of(command: str) -> list[str] | None:
    """The magworld arguments of one command line (after xvfb-run and the like; of its magworld
    part where `&&`, `;` or a pipe joins several), or None where it holds a substitution."""
    if any(s in command for s in ("$(", "`")):
        return None
    segment = next(p for p in re.split(r"&&|\|\||[;|]", command) if re.search(r"(^|\s)(\S*/)?magworld\s", p + " "))
    words = shlex.split(segment)
    i = next(k for k, w in enumerate(words) if w.endswith("magworld"))
    return words[i + 1:]


CASES = [(doc.relative_to(ROOT).as_posix(), c) for doc in DOCS for c in magworld_commands(doc.read_text())]


def test_the_docs_hold_magworld_commands_to_check():
    assert len(CASES) >= 20 and any(doc == "README.md" for doc, _ in CASES)
    assert any("xvfb-run" in c for _, c in CASES)  # wrapped commands are found too


@pytest.mark.parametrize("doc", sorted({d for d, _ in CASES} - {"docs/results.md"}))
def test_every_checkpoint_a_documented_command_reads_is_shipped_or_made_before(doc):
    """`--checkpoint checkpoints/X` (or --init, --autoencoder ...) must name a shipped checkpoint,
    or one that a command of the same page writes (`--out checkpoints/X`). Not docs/results.md:
    its commands say how each past figure was measured, with the checkpoints of that time."""
    commands = [c for d, c in CASES if d == doc]
    made = {m for c in commands for m in re.findall(r"--out\s+(checkpoints/[\w.-]+)", c)}
    for c in commands:
        for path in re.findall(r"(?<!--out )(?<![\w/])(checkpoints/[\w.-]+)", c):
            assert path in made or (ROOT / path).is_dir(), f"{doc}: `{c}` reads {path}, which is not shipped"


@pytest.mark.parametrize("doc,command", CASES, ids=[f"{d}:{c[:60]}" for d, c in CASES])
def test_a_documented_command_parses(doc, command):
    argv = argv_of(command)
    if argv is None:
        pytest.skip("shell syntax")
    if any(re.fullmatch(r"[A-Z][A-Z_]*", w) or "<" in w or "..." in w for w in argv):
        # placeholders (CKPT, HELDOUT, <dir>, ...): substitute a plausible value for each
        argv = [re.sub(r"^[A-Z][A-Z_]*$", "x", w) for w in argv if w != "..."]
    try:
        build_parser().parse_args(argv)
    except SystemExit as e:
        pytest.fail(f"{doc}: `{command}` does not parse (exit {e.code})")
