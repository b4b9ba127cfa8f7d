#!/usr/bin/env bash
# bench/plot.sh: plots saga-bench JSON files with gnuplot.
#
#   bench/plot.sh [-o OUTDIR] RUN.json...
#
# Writes into OUTDIR (default bench/results):
#   throughput-p99.png           sagas/s against p99 latency, one panel per workload,
#                                one line per (sync, closed/open loop) series, with the
#                                targets drawn in
#   latency-<workload>.png       p50/p90/p99/p99.9/max of every point of that workload
#   soak-<n>.png                 for each --soak point: every store's keys and bytes on
#                                disk over time
# Needs gnuplot (pngcairo terminal) and python3 (standard library only).
set -euo pipefail
out="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/results"
if [[ ${1:-} == -o ]]; then
  out=$2
  shift 2
fi
[[ $# -ge 1 ]] || { echo "usage: $0 [-o OUTDIR] RUN.json..." >&2; exit 2; }
command -v gnuplot >/dev/null || { echo "$0: gnuplot is not installed (scripts/setup installs it)" >&2; exit 1; }
mkdir -p "$out"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

python3 - "$work" "$out" "$@" <<'PY'
import json, os, sys

work, out, files = sys.argv[1], sys.argv[2], sys.argv[3:]
series = {}   # (workload, title) -> [(x, p99, label)]
lat = {}      # workload -> [(label, p50, p90, p99, p999, max)]
soaks = []    # (title, samples)
revs = set()
for f in files:
    with open(f) as fh:
        run = json.load(fh)
    revs.add(run.get("libsaga_revision", "?") + " " + str(run.get("date", ""))[:10])
    for p in run["points"]:
        if "soak" in p:
            sk = p["soak"]
            soaks.append((f"{p['offered_per_s']:g} sagas/s offered for {sk['minutes']:g} min, retention "
                          f"{sk['retention_ms'] / 1000:g} s, dedup horizon {sk['dedup_horizon_ms'] / 1000:g} s",
                          sk["samples"]))
        wl = p["workload"]
        sync = "sync on" if p["sync"] else "sync off"
        if p["loop"] == "open":
            title = f"{sync}, open loop"
            label = f"{'on' if p['sync'] else 'off'} r{p['offered_per_s']:g}" + ("*" if p.get("saturated") else "")
        else:
            title = f"{sync}, closed loop"
            label = f"{'on' if p['sync'] else 'off'} k{p['inflight']}"
        l = p["latency_ms"]
        # A saturated open-loop point may settle nothing in its measuring
        # window; it is drawn at its whole-point rate then.
        x = p["sagas_per_s"] if p["sagas_per_s"] > 0 else p.get("overall_per_s", 0)
        if x > 0 and l["p99"] > 0:
            order = p.get("offered_per_s", p.get("inflight", 0))
            series.setdefault((wl, title), []).append((order, x, l["p99"], label))
        lat.setdefault(wl, []).append((label, l["p50"], l["p90"], l["p99"], l["p999"], l["max"]))

workloads = sorted({wl for wl, _ in series})
targets = {"engine": (30000, None), "kafka": (5000, 50)}
colors = {"sync on, closed loop": "#1f77b4", "sync on, open loop": "#d62728",
          "sync off, closed loop": "#2ca02c", "sync off, open loop": "#ff7f0e"}
gp = [
    'set terminal pngcairo size 1400,600 font "DejaVu Sans,10"',
    f'set output "{out}/throughput-p99.png"',
    f'set multiplot layout 1,{len(workloads)} title "saga-bench: throughput vs p99 latency ({", ".join(sorted(revs))})"',
    'set logscale xy', 'set grid', 'set key bottom right',
    'set xlabel "settled sagas/s"', 'set ylabel "p99 latency (ms)"',
]
for wl in workloads:
    plots = []
    for i, ((w, title), pts) in enumerate(sorted(series.items())):
        if w != wl:
            continue
        pts.sort()  # by load parameter: a saturated open-loop point falls back in x
        dat = os.path.join(work, f"s{i}.dat")
        with open(dat, "w") as fh:
            for _, x, y, label in pts:
                fh.write(f"{x} {y} \"{label}\"\n")
        color = colors.get(title, "black")
        plots.append(f'"{dat}" using 1:2 with linespoints pt 7 lw 2 lc rgb "{color}" title "{title}"')
        plots.append(f'"{dat}" using 1:2:3 with labels offset 0,0.8 font ",8" notitle')
    tx, ty = targets.get(wl, (None, None))
    xs = [x for (w, _), pts in series.items() if w == wl for _, x, _, _ in pts] + ([tx] if tx else [])
    ys = [y for (w, _), pts in series.items() if w == wl for _, _, y, _ in pts] + ([ty] if ty else [])
    gp.append(f"set xrange [{min(xs) / 2}:{max(xs) * 2}]")
    gp.append(f"set yrange [{min(ys) / 2}:{max(ys) * 2}]")
    gp.append(f'set title "{wl}"')
    gp.append('unset arrow')
    if tx:
        gp.append(f'set arrow from {tx}, graph 0 to {tx}, graph 1 nohead dt 2 lc rgb "red"')
        gp.append(f'set label 1 "target {tx}/s" at {tx}, graph 0.95 right offset -0.5,0 tc rgb "red"')
    if ty:
        gp.append(f'set arrow from graph 0, first {ty} to graph 1, first {ty} nohead dt 2 lc rgb "red"')
        gp.append(f'set label 2 "target p99 {ty} ms (at half the target load)" at graph 0.02, first {ty} offset 0,0.7 tc rgb "red"')
    gp.append("plot " + ", \\\n  ".join(plots))
    gp.append("unset label 1; unset label 2")
gp.append("unset multiplot")

for wl, rows in lat.items():
    dat = os.path.join(work, f"lat-{wl}.dat")
    with open(dat, "w") as fh:
        for r in rows:
            fh.write(f"\"{r[0]}\" {r[1]} {r[2]} {r[3]} {r[4]} {r[5]}\n")
    width = max(900, 60 * len(rows) + 200)
    gp += [
        'reset', f'set terminal pngcairo size {width},500 font "DejaVu Sans,10"',
        f'set output "{out}/latency-{wl}.png"',
        f'set title "saga-bench {wl}: latency percentiles per point (k = in flight, r = offered sagas/s, * = saturated)"',
        'set style data histogram', 'set style histogram clustered gap 1', 'set style fill solid 0.8 border -1',
        'set logscale y', 'set grid ytics', 'set ylabel "latency (ms)"', 'set xtics rotate by -30',
        'set key top left', 'set yrange [0.01:*]',
        f'plot "{dat}" using 2:xtic(1) title "p50", "" using 3 title "p90", "" using 4 title "p99", '
        '"" using 5 title "p99.9", "" using 6 title "max"',
    ]
for n, (title, samples) in enumerate(soaks):
    dat = os.path.join(work, f"soak-{n}.dat")
    stores = ("orchestrator", "inventory", "payment")
    with open(dat, "w") as fh:
        for s in samples:
            fh.write(" ".join([f"{s['t'] / 60:.3f}"] +
                              [str(s[st]["keys"]) for st in stores] +
                              [f"{s[st]['disk_bytes'] / 2**20:.1f}" for st in stores]) + "\n")
    keys = ", ".join(f'"{dat}" using 1:{2 + i} with lines lw 2 title "{st}"' for i, st in enumerate(stores))
    disk = ", ".join(f'"{dat}" using 1:{5 + i} with lines lw 2 title "{st}"' for i, st in enumerate(stores))
    gp += [
        'reset', 'set terminal pngcairo size 1400,500 font "DejaVu Sans,10"',
        f'set output "{out}/soak-{n}.png"',
        f'set multiplot layout 1,2 title "saga-bench soak: {title}"',
        'set grid', 'set key top left', 'set xlabel "minutes"',
        'set ylabel "live keys (RocksDB estimate)"', f'plot {keys}',
        'set ylabel "MiB on disk"', f'plot {disk}',
        'unset multiplot',
    ]
with open(os.path.join(work, "plot.gp"), "w") as fh:
    fh.write("\n".join(gp) + "\n")
PY
gnuplot "$work/plot.gp"
ls "$out"/throughput-p99.png "$out"/latency-*.png
ls "$out"/soak-*.png 2>/dev/null || true
