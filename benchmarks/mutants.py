"""Mutation testing results (issue 15): how many of mutmut's mutants do the tests kill, per module?

`make mutants` runs mutmut 3 over the six core modules (``[tool.mutmut]`` in pyproject.toml) and
keeps its results under ``mutants/``: one ``<source>.py.meta`` JSON file per mutated module, whose
``exit_code_by_key`` maps each mutant's name to the exit code of its test run (``null`` while not
checked) and ``durations_by_key`` to the seconds that run took. This script reads those files,
turns the exit codes into statuses with mutmut's own table (``mutmut.stats.status_by_exit_code``:
1 and 3 killed, 0 survived, None not checked, 36, 24, -24, 152 and 255 timeout, ...), and prints
per module: mutants, killed, survived, timeout, not checked, other (suspicious, segfault, no
tests, ...) and the kill rate among the checked ones, killed / (killed + survived + timeout).

It also lists every surviving mutant and marks those that a test in ``tests/test_mutants_gaps.py``
names in its docstring (``x_pool_frames 11, 12, 13; xǁGateǁbias 4-6``; a bare method name after
``xǁClassǁmethod`` belongs to the same class): such a test was written after mutmut saw the
mutant survive and was seen failing against it, but mutmut keeps the old verdict until it
checks the mutant again (`make mutants MUTANTS=NAME`). Names are matched without the module,
so ``x_step 3`` would match ``x_step`` in any module.

The measured seconds are the sums of ``durations_by_key`` over the checked mutants: the wall time
of each mutant's test run, from its fork to its exit (mutmut's start-up, its first run of the test
selection that maps tests to functions, ``stats_time`` in ``mutants/mutmut-stats.json``, and the
waits between mutants are not in it). The figure for a whole module extrapolates the mean of its
checked mutants to its unchecked ones: an estimate only.

    python benchmarks/mutants.py [--mutants mutants] [--gap-tests tests/test_mutants_gaps.py]
        [--json benchmarks/results/mutants.json]
    python benchmarks/mutants.py --sync     # before mutmut runs (make mutants does it)

``--sync``: mutmut refreshes the ``.py`` files of an existing ``mutants/`` copy but not the
package's other files (the C export's templates); this copies those that differ and exits.
"""

from __future__ import annotations

import argparse
import ast
import datetime as dt
import filecmp
import json
import re
import shutil
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MAIN = ("killed", "survived", "timeout", "not checked")


def load_status_table():
    try:
        from mutmut.stats import status_by_exit_code
    except ImportError as e:
        sys.exit(f"benchmarks/mutants.py needs the package mutmut >= 3 for "
                 f"mutmut.stats.status_by_exit_code ({e}); `make mutants` installs it, or "
                 "`pip install 'mutmut>=3'`")
    return status_by_exit_code


def _unqualified(name: str) -> str:
    """``dyncp.gates.xǁGateǁbias__mutmut_4`` -> ``xǁGateǁbias__mutmut_4``."""
    m = re.search(r"\.(xǁ|x_)", name)
    return name[m.start() + 1:] if m else name


def gap_test_names(path: Path) -> dict[str, str]:
    """Mutants named in the docstrings of ``path``'s tests: unqualified mutant name -> test."""
    if not path.is_file():
        return {}
    out: dict[str, str] = {}
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if not (isinstance(node, ast.FunctionDef) and node.name.startswith("test")):
            continue
        text = ast.get_docstring(node) or ""
        while re.search(r"\([^()]*\)", text):              # asides hold numbers that are not
            text = re.sub(r"\([^()]*\)", "", text)          # mutants: drop them, inner first
        text = text.split(":")[0]                           # the prose after the list
        cls = None
        for m in re.finditer(r"(xǁ\w+ǁ\w+|x_\w+|[A-Za-z_]\w*)\s+((?:\d+(?:-\d+)?(?:\s*,\s*|\s+))*"
                             r"\d+(?:-\d+)?)", text):
            func, nums = m.group(1), m.group(2)
            if func.startswith("xǁ"):
                cls = func.split("ǁ")[1]
            elif not func.startswith("x_"):
                if cls is None or not text[:m.start()].rstrip().endswith((",", ";")):
                    continue                        # prose, not a method in the list of a class
                func = f"xǁ{cls}ǁ{func}"
            for part in re.findall(r"\d+(?:-\d+)?", nums):
                lo, _, hi = part.partition("-")
                for i in range(int(lo), int(hi or lo) + 1):
                    out.setdefault(f"{func}__mutmut_{i}", node.name)
    return out


def module_stats(meta: Path, table, named: dict[str, str]) -> dict:
    d = json.loads(meta.read_text(encoding="utf-8"))
    codes: dict = d.get("exit_code_by_key", {})
    durations: dict = d.get("durations_by_key", {})
    status = {k: table[v] for k, v in codes.items()}
    counts = Counter(status.values())
    killed, survived, timeout = counts["killed"], counts["survived"], counts["timeout"]
    checked = [k for k, s in status.items() if s != "not checked"]
    timed = [durations[k] for k in checked if k in durations]
    seconds = sum(timed)
    mean = seconds / len(timed) if timed else None
    survivors = sorted((k for k, s in status.items() if s == "survived"),
                       key=lambda k: (k.rsplit("__mutmut_", 1)[0], int(k.rsplit("_", 1)[1])))
    by_gap = {k: named[_unqualified(k)] for k in survivors if _unqualified(k) in named}
    denom = killed + survived + timeout
    return {
        "mutants": len(codes),
        "killed": killed,
        "survived": survived,
        "timeout": timeout,
        "not_checked": counts["not checked"],
        "other": sum(n for s, n in counts.items() if s not in MAIN),
        "other_by_status": {s: n for s, n in sorted(counts.items()) if s not in MAIN},
        "kill_rate_checked": killed / denom if denom else None,
        "seconds_measured": round(seconds, 1),
        "seconds_by_status": {st: round(sum(durations[k] for k in checked
                                            if status[k] == st and k in durations), 1)
                              for st in sorted({status[k] for k in checked})},
        "mutants_timed": len(timed),
        "seconds_per_checked_mutant": round(mean, 3) if mean is not None else None,
        "seconds_estimated_all": (round(mean * len(codes), 1) if mean is not None else None),
        "meta_modified": dt.datetime.fromtimestamp(meta.stat().st_mtime, dt.timezone.utc)
                           .isoformat(timespec="seconds"),
        "survivors": survivors,
        "survivors_named_in_gap_tests": by_gap,
        "survivors_open": [k for k in survivors if k not in by_gap],
        "not_killed_other": {k: s for k, s in sorted(status.items())
                             if s not in ("killed", "survived", "not checked")},
    }


def pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f} %"


def sync(folder: Path, package: Path = ROOT / "dyncp") -> list[Path]:
    """Copy the package's non-Python files that differ into mutmut's copy ``folder``; returns
    what was copied (nothing when ``folder`` does not exist yet: mutmut copies it all then)."""
    copied = []
    if not folder.is_dir():
        return copied
    for f in sorted(package.rglob("*")):
        if not f.is_file() or f.suffix in (".py", ".pyc"):
            continue
        dst = folder / f.relative_to(ROOT)
        if not (dst.is_file() and filecmp.cmp(f, dst, shallow=False)):
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(f, dst)
            copied.append(dst)
    return copied


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mutants", default=str(ROOT / "mutants"),
                    help="mutmut's folder, searched for *.py.meta (default: %(default)s)")
    ap.add_argument("--gap-tests", default=str(ROOT / "tests/test_mutants_gaps.py"),
                    help="tests whose docstrings name the survivors they kill (default: "
                    "%(default)s)")
    ap.add_argument("--json", default=str(ROOT / "benchmarks/results/mutants.json"),
                    help="where to write the figures ('' for nowhere; default: %(default)s)")
    ap.add_argument("--list", action="store_true", help="print every surviving mutant")
    ap.add_argument("--sync", action="store_true", help="copy the package's changed non-Python "
                    "files into the mutants folder, then exit")
    args = ap.parse_args(argv)
    if args.sync:
        for f in sync(Path(args.mutants)):
            print(f"synced {f}")
        return 0

    table = load_status_table()
    folder = Path(args.mutants)
    if not folder.is_dir():
        sys.exit(f"{folder}: no such folder; `make mutants` writes mutmut's results there")
    metas = sorted(folder.rglob("*.py.meta"))
    if not metas:
        sys.exit(f"{folder}: no *.py.meta files (mutmut's results); run `make mutants` first")
    named = gap_test_names(Path(args.gap_tests))

    modules = {str(m.relative_to(folder))[:-len(".meta")]: module_stats(m, table, named)
               for m in metas}
    keys = ("mutants", "killed", "survived", "timeout", "not_checked", "other",
            "seconds_measured", "seconds_estimated_all")
    total = {k: round(sum(s[k] or 0 for s in modules.values()), 1) for k in keys}
    for k in ("mutants", "killed", "survived", "timeout", "not_checked", "other"):
        total[k] = int(total[k])
    denom = total["killed"] + total["survived"] + total["timeout"]
    total["kill_rate_checked"] = total["killed"] / denom if denom else None
    total["survivors_named_in_gap_tests"] = sum(len(s["survivors_named_in_gap_tests"])
                                                for s in modules.values())
    total["survivors_open"] = sum(len(s["survivors_open"]) for s in modules.values())
    by_status: Counter = Counter()
    for s in modules.values():
        by_status.update(s["seconds_by_status"])
    total["seconds_by_status"] = {k: round(v, 1) for k, v in sorted(by_status.items())}
    newest = max(m.stat().st_mtime for m in metas)

    w = max(len(m) for m in [*modules, "total"])
    print(f"{'module':{w}s} {'mutants':>7s} {'killed':>6s} {'survived':>8s} {'timeout':>7s} "
          f"{'not checked':>11s} {'other':>5s} {'kill rate':>9s} {'test s':>7s} "
          f"{'in gap tests':>12s}")
    for name, s in [*modules.items(), ("total", total)]:
        gap = (len(s["survivors_named_in_gap_tests"]) if name != "total"
               else total["survivors_named_in_gap_tests"])
        print(f"{name:{w}s} {s['mutants']:7d} {s['killed']:6d} {s['survived']:8d} "
              f"{s['timeout']:7d} {s['not_checked']:11d} {s['other']:5d} "
              f"{pct(s['kill_rate_checked']):>9s} {s['seconds_measured']:7.0f} {gap:12d}")
    print("\nkill rate = killed / (killed + survived + timeout); test s = seconds of the checked "
          "mutants' test runs (durations_by_key); in gap tests = survivors that a test in "
          f"{Path(args.gap_tests).name} names (written after mutmut's verdict, not re-checked)")
    print(f"newest result: {dt.datetime.fromtimestamp(newest, dt.timezone.utc):%Y-%m-%d %H:%M} UTC")
    for name, s in modules.items():
        if s["other_by_status"]:
            print(f"{name}: " + ", ".join(f"{n} {st}" for st, n in s["other_by_status"].items()))
    for name, s in modules.items():
        if s["survivors_open"] and args.list:
            print(f"\n{name}: {len(s['survivors_open'])} survivors not named in the gap tests")
            for k in s["survivors_open"]:
                print(f"  {k}")

    if args.json:
        stats_file = folder / "mutmut-stats.json"
        run = {}
        if stats_file.is_file():
            st = json.loads(stats_file.read_text(encoding="utf-8"))
            cpu = st.get("stats_time")        # process_time() of the run mapping tests to code
            run = {"git_commit": st.get("git_commit"),
                   "stats_run_cpu_seconds": round(cpu, 1) if isinstance(cpu, (int, float))
                   else None}
        try:
            from importlib.metadata import version
            mutmut_version = version("mutmut")
        except Exception:                                   # noqa: BLE001 (informative only)
            mutmut_version = None
        out = {"mutmut_version": mutmut_version,
               "newest_result_utc": dt.datetime.fromtimestamp(newest, dt.timezone.utc)
                                      .isoformat(timespec="seconds"),
               "run": run,
               "kill_rate": "killed / (killed + survived + timeout)",
               "seconds": "seconds_measured: sum of durations_by_key (wall seconds of each "
                          "mutant's test run) over the checked mutants; seconds_estimated_all: "
                          "their mean x every mutant of the module (an extrapolation)",
               "gap_tests": str(Path(args.gap_tests).resolve().relative_to(ROOT))
                            if Path(args.gap_tests).resolve().is_relative_to(ROOT)
                            else args.gap_tests,
               "total": total, "modules": modules}
        from dyncp.atomic import write_text
        text = json.dumps(out, indent=2, ensure_ascii=False) + "\n"   # names keep their ǁ
        print(f"\nwrote {write_text(args.json, text)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
