"""docs/FORMAT.md's worked examples, read back for the tests that check them against real blobs."""
from __future__ import annotations

import re
from pathlib import Path

FORMAT_MD = Path(__file__).resolve().parents[2] / "docs" / "FORMAT.md"


def doc_block(marker: str) -> str:
    """The fenced block after ``<!-- marker -->`` in docs/FORMAT.md."""
    m = re.search(rf"<!-- {marker} -->\s*```\w*\n(.*?)```", FORMAT_MD.read_text(encoding="utf-8"), re.S)
    assert m, f"docs/FORMAT.md lost its '<!-- {marker} -->' block"
    return m.group(1)


def dump_bytes(marker: str) -> bytes:
    """The bytes of a hex dump block: ``offset: hex bytes | text`` lines."""
    dump = doc_block(marker)
    return bytes.fromhex("".join(line.split(":", 1)[1].split("|")[0] for line in dump.splitlines() if ":" in line))
