#!/usr/bin/env python3
"""Alternate two distflow binaries on the same `distflow bench` runs and compare.

    bench/compare.py --old OLD --new NEW [--runs 5] [--save DIR] \
        --bench 'throughput --msgs 1000000 --reps 1' \
        --bench 'latency --msgs 20000 --reps 1 --pin same' \
        --bench 'mailbox --reps 1' \
        [--alias '2:node<->node=node<->node inline']

Per round, every --bench runs once with OLD, then once with NEW (`--json` is
added), so both binaries see the same load drift. Per series present in both
outputs (rates: msgs/s median; latencies: p50 and p99), the report gives the
median over the rounds for OLD and NEW, NEW/OLD, and "speed", where > 1 is
better for NEW (NEW/OLD for rates, OLD/NEW for times and other figures,
such as `bench pmd`'s start times and idle RSS); a series is flagged when its
speed is below --min-speed (default 0.95). Figures in `x` (ratios inside one
run, such as `ratio node/raw`) are listed as medians per binary, not judged:
their direction depends on the figure. --alias renames an OLD series
of the N-th --bench (1-based) to NEW's name; --new-extra adds flags for NEW
only (a flag OLD lacks, such as --no-raw) when a series was renamed. --save
keeps every JSON document (DIR/<N>-<kind>-<round>-<old|new>.json).
Only the processes `distflow bench` starts run; it stops them itself.
"""
import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import time


def extract(doc):
    out = {}
    for r in doc.get("rates", []):
        out[("rate", r["name"], "msgs/s")] = r["msgs_per_sec"]["median"]
    for lat in doc.get("latencies", []):
        for key in ("p50_ns", "p99_ns"):
            if key in lat["median"]:
                out[("time", lat["name"], key[:-3] + " µs")] = lat["median"][key] / 1000.0
    for name, fig in doc.get("figures", {}).items():
        out[("figure", name, fig.get("unit", ""))] = fig["value"]
    return out


def run_one(binary, args, timeout):
    cmd = [binary, "bench"] + args + ["--json"]
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None, "timeout"
    if p.returncode != 0:
        return None, "exit %d: %s" % (p.returncode, p.stderr.strip()[-300:])
    try:
        return json.loads(p.stdout), None
    except json.JSONDecodeError as e:
        return None, "bad json: %s" % e


def fmt(v):
    if v is None:
        return "-"
    if abs(v) >= 1e6:
        return "%.3f M" % (v / 1e6)
    if abs(v) >= 1e3:
        return "%.1f k" % (v / 1e3)
    return "%.3g" % v


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--old", required=True)
    ap.add_argument("--new", required=True)
    ap.add_argument("--runs", type=int, default=5, help="rounds (each: every bench with OLD, then NEW)")
    ap.add_argument("--bench", action="append", required=True, help="'KIND flags...' as after `distflow bench`")
    ap.add_argument("--alias", action="append", default=[], help="N:OLDNAME=NEWNAME (N: the --bench, from 1)")
    ap.add_argument("--new-extra", action="append", default=[],
                    help="N:'FLAGS' added for NEW only to the N-th --bench (e.g. 1:--no-raw)")
    ap.add_argument("--min-speed", type=float, default=0.95)
    ap.add_argument("--timeout", type=int, default=600, help="seconds per invocation")
    ap.add_argument("--save", help="directory for every JSON document")
    a = ap.parse_args()

    aliases = {}
    for al in a.alias:
        index, rest = al.split(":", 1)
        old, new = rest.split("=", 1)
        aliases[(int(index), old)] = new
    new_extra = {}
    for ne in a.new_extra:
        index, rest = ne.split(":", 1)
        new_extra[int(index)] = shlex.split(rest)
    if a.save:
        os.makedirs(a.save, exist_ok=True)

    benches = [shlex.split(b) for b in a.bench]
    # values[bench index - 1][which][key] = [per round]
    values = [{"old": {}, "new": {}} for _ in benches]
    failures = []
    for rnd in range(a.runs):
        for index, args in enumerate(benches, 1):
            kind = args[0]
            for which, binary in (("old", a.old), ("new", a.new)):
                t0 = time.time()
                extra = new_extra.get(index, []) if which == "new" else []
                doc, err = run_one(binary, args + extra, a.timeout)
                sys.stderr.write("round %d %s %s: %s (%.1f s, load %s)\n" % (
                    rnd + 1, kind, which, err or "ok", time.time() - t0,
                    open("/proc/loadavg").read().split()[0]))
                if err:
                    failures.append((rnd + 1, kind, which, err))
                    continue
                if a.save:
                    with open(os.path.join(a.save, "%d-%s-%d-%s.json" % (index, kind, rnd + 1, which)), "w") as f:
                        json.dump(doc, f)
                for (cls, name, unit), v in extract(doc).items():
                    if which == "old":
                        name = aliases.get((index, name), name)
                    values[index - 1][which].setdefault((cls, name, unit), []).append(v)

    print("# %d rounds, OLD=%s NEW=%s" % (a.runs, a.old, a.new))
    worst = None
    for index, args in enumerate(benches, 1):
        print("\n## %d. bench %s%s" % (index, " ".join(args), "".join(
            " (NEW also: %s)" % " ".join(new_extra[index]) for _ in [0] if index in new_extra)))
        print("| series | unit | OLD median | NEW median | NEW/OLD | speed | n old/new | |")
        print("|---|---|---|---|---|---|---|---|")
        old, new = values[index - 1]["old"], values[index - 1]["new"]
        for key in list(new.keys()) + [k for k in old if k not in new]:
            cls, name, unit = key
            mo = statistics.median(old[key]) if key in old else None
            mn = statistics.median(new[key]) if key in new else None
            ratio = mn / mo if (mo and mn is not None) else None
            speed, flag = None, ""
            if cls == "figure" and unit == "x":
                flag = "(in-run ratio)"
            elif ratio is not None:
                # rates: higher is better; times, sizes (µs, ms, MiB) lower
                speed = ratio if cls == "rate" else 1.0 / ratio
                flag = "ok" if speed >= a.min_speed else "WORSE"
                worst = speed if worst is None else min(worst, speed)
            print("| %s | %s | %s | %s | %s | %s | %d/%d | %s |" % (
                name, unit, fmt(mo), fmt(mn), "-" if ratio is None else "%.3f" % ratio,
                "-" if speed is None else "%.3f" % speed,
                len(old.get(key, [])), len(new.get(key, [])), flag))
    if failures:
        print("\nfailures:")
        for f in failures:
            print("  round %d %s %s: %s" % f)
    if worst is not None:
        print("\nlowest speed NEW vs OLD: %.3f (threshold %.2f)" % (worst, a.min_speed))
    return 0


if __name__ == "__main__":
    sys.exit(main())
