"""Shared by the benchmark scripts: write one section of BENCHMARKS.md with its command, machine and date."""

from __future__ import annotations

import os
import platform
import re
import sys
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS_MD = ROOT / "BENCHMARKS.md"
HEADER = ("# Benchmarks\n\nEvery figure here is written by a script in `benchmarks/`; each section names the "
          "command that produced it, the machine and the date. Re-run the command to refresh it.\n")


def vector_level(flags) -> str:
    """The widest vector and int8 dot-product instructions among the CPU's flags: int8 speed-ups in
    onnxruntime hang on them (VNNI does a uint8 x int8 dot product in one instruction; AVX2 needs three)."""
    flags = set(flags)
    widest = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "no AVX2"
    vnni = [name for flag, name in (("avx512_vnni", "AVX-512 VNNI"), ("avx_vnni", "AVX-VNNI"), ("amx_int8", "AMX"))
            if flag in flags]
    return ", ".join([widest] + vnni) if vnni else f"{widest}, no VNNI"


def machine() -> str:
    cpu, simd = platform.processor() or platform.machine(), ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                simd = vector_level(line.split(":", 1)[1].split())
                break
    except OSError:
        pass
    import torch

    return (f"{cpu}{f' ({simd})' if simd else ''}, {os.cpu_count()} cores, Python {platform.python_version()}, "
            f"torch {torch.__version__}, "
            f"{platform.system()} {platform.machine()}")


def project_path(arg) -> str:
    """An absolute path beside or inside the project as the project sees it (``../shared/...``), so
    recorded commands hold no machine's own folders; anything else as given."""
    path = Path(str(arg))
    if path.is_absolute() and (path == ROOT.parent or ROOT.parent in path.parents):
        return os.path.relpath(path, ROOT)
    return str(arg)


def command() -> str:
    return "python " + " ".join([os.path.relpath(sys.argv[0], ROOT)] + [project_path(a) for a in sys.argv[1:]])


RESULTS = ROOT / "benchmarks" / "results"
ORDER = ["quickstart", "supernets", "fewshot", "fewshot_logo", "devices", "devices_add"]  # the rest follow alphabetically


def write_section(slug: str, title: str, body: str, cmd: str | None = None) -> None:
    """Write benchmarks/results/<slug>.md (command, machine, date, figures), then rebuild BENCHMARKS.md."""
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{slug}.md").write_text(
        f"## {title}\n\n- command: `{cmd or command()}`\n- machine: {machine()}\n- date: {stamp}\n\n{body.strip()}\n")
    rebuild()


def rebuild() -> None:
    """BENCHMARKS.md = every results/*.md, a '# ' title demoted to '## ' so the page has one title."""
    files = sorted(RESULTS.glob("*.md"), key=lambda p: (ORDER.index(p.stem) if p.stem in ORDER else len(ORDER), p.stem))
    parts = [HEADER]
    for path in files:
        text = path.read_text().strip()
        text = re.sub(r"^(#+) ", lambda m: "#" + m.group(1) + " ", text, flags=re.M) if text.startswith("# ") else text
        parts.append(text + f"\n\n(from `benchmarks/results/{path.name}`)\n")
    BENCHMARKS_MD.write_text("\n".join(parts))


if __name__ == "__main__":
    rebuild()
