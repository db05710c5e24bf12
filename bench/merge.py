#!/usr/bin/python3
"""Merges scenarios of several bench.py runs of the same day and machine into one report.

    bench/merge.py OUT.json BASE.json KEY=RUN.json[:FROM_KEY] ...

OUT starts as BASE (its machine, ceilings and scenarios); each KEY=RUN.json[:FROM_KEY] puts
RUN's FROM_KEY (default KEY) under KEY. The commands of every run are kept, then this one's.
Writes OUT.json, OUT.md and OUT.png (bench/report.py)."""
import json, sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import report  # noqa: E402


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    out, base = Path(sys.argv[1]), json.loads(Path(sys.argv[2]).read_text())
    commands = [f"{c}    # {Path(sys.argv[2]).name}" for c in base.get("commands", [])]
    scenarios = list(base.get("scenarios", []))
    for spec in sys.argv[3:]:
        key, source = spec.split("=", 1)
        path, _, from_key = source.partition(":")
        run = json.loads(Path(path).read_text())
        base[key] = run[from_key or key]
        commands += [f"{c}    # {Path(path).name}" for c in run.get("commands", [])]
        scenarios.append(key)
    base["commands"] = list(dict.fromkeys(commands)) + [" ".join(["bench/merge.py", *sys.argv[1:]])]
    base["scenarios"] = list(dict.fromkeys(scenarios))
    out.with_suffix(".json").write_text(json.dumps(base, indent=1))
    report.render(base, out.with_suffix(""))


if __name__ == "__main__":
    main()
