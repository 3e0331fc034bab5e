/**
 * Draws the Xen suite's comparison against the kernel's xen-blkfront as one
 * SVG (docs/xen-comparison.svg): for each workload, the matched kernel's
 * median as 1.0 and each blkbench row beside it, with its range. It reads
 * the comparison lines `npm run test:xen` leaves in its console log
 * (test/xen/compare.ts writes them).
 *
 *   node dist/bench/xen-chart.js [CONSOLE_LOG] [OUT.svg]
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { ratioChart, type BarGroup } from '../src/cli/blkbench/plot.js';

interface Row {
  workload: string;
  label: string;
  ours: { median: number; min: number; max: number };
  theirs: { median: number; min: number; max: number };
}

/** "1,234.5" → 1234.5 */
const n = (s: string) => Number(s.replace(/,/g, ''));
const RATE = String.raw`([\d,.]+) (?:IOPS|MiB/s) \(([\d,.]+) (?:IOPS|MiB/s)–([\d,.]+) (?:IOPS|MiB/s)\)`;
/** compareLine's words: "<workload> [<label>]: blkbench <rate> (<min>–<max>), …; matched kernel <rate> (<min>–<max>), …". */
const LINE = new RegExp(String.raw`# xen-bench (.+?) \[(.+?)\]: blkbench ${RATE}.*?; matched kernel ${RATE}`);

const [log = '/tmp/xen-testbed-console.log', out = 'docs/xen-comparison.svg'] = process.argv.slice(2);
const rows: Row[] = [];
for (const line of readFileSync(log, 'utf8').split('\n')) {
  const m = LINE.exec(line);
  if (m === null) continue;
  rows.push({
    workload: m[1]!,
    label: m[2]!,
    ours: { median: n(m[3]!), min: n(m[4]!), max: n(m[5]!) },
    theirs: { median: n(m[6]!), min: n(m[7]!), max: n(m[8]!) },
  });
}
// The xen-blkback table only (qdisk rows are named so), grouped by workload in the order they ran.
const blkback = rows.filter((r) => !r.workload.includes('(qdisk)'));
const labels = [...new Set(blkback.map((r) => r.label))];
const groups: BarGroup[] = [];
for (const name of [...new Set(blkback.map((r) => r.workload))]) {
  const mine = blkback.filter((r) => r.workload === name);
  const bars: BarGroup['bars'] = [mine[0]!.theirs];
  for (const l of labels) {
    const r = mine.find((x) => x.label === l);
    bars.push(r?.ours ?? null);
  }
  groups.push({ name, bars });
}
if (groups.length === 0) {
  console.error(`xen-chart: no comparison lines in ${log}`);
  process.exit(1);
}
writeFileSync(
  out,
  ratioChart(
    "blkbench against the kernel's xen-blkfront (matched), medians of 3 with ranges; kernel = 1",
    ['matched kernel', ...labels.map((l) => `blkbench: ${l}`)],
    groups,
  ),
);
console.log(`xen-chart: ${groups.length} workloads, ${labels.length} blkbench rows -> ${out}`);
