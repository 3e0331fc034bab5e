/**
 * blkbench's charts: one self-contained SVG per run (`--plot`), and the
 * grouped ratio bars the docs use. Checked as XML (every tag closed, nothing
 * fetched from outside) and for what they must show.
 */
import { describe, expect, it } from 'vitest';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PERCENTILES, ratioChart, runChart } from '../../src/cli/blkbench/plot.js';
import { main } from '../../src/cli/blkbench/main.js';
import { runMain } from '../helpers/cli.js';

/** Every element opened is closed, in order; no script and no external reference. */
function wellFormed(svg: string): void {
  expect(svg.startsWith('<svg xmlns="http://www.w3.org/2000/svg"')).toBe(true);
  const stack: string[] = [];
  for (const m of svg.matchAll(/<(\/?)([a-z]+)[^>]*?(\/?)>/g)) {
    const names = [...m[0].matchAll(/\s([a-z-]+)="/g)].map((a) => a[1]);
    expect(new Set(names).size, `no attribute twice in ${m[0]}`).toBe(names.length);
    if (m[1] === '/') expect(stack.pop()).toBe(m[2]);
    else if (m[3] !== '/') stack.push(m[2]!);
  }
  expect(stack).toEqual([]);
  expect(svg).not.toMatch(/<script|href=|url\(/);
}

describe('charts', () => {
  it('a run: one line per run in each panel, the labels escaped', () => {
    const svg = runChart('a <b> & c', 'IOPS', [
      { label: 'driver', perSecond: [100, 900, 1000], latencyUs: [50, 80, 120, 400, 900] },
      { label: 'baseline "fs"', perSecond: [800, 820], latencyUs: [40, 60, 100, 300, 800] },
    ]);
    wellFormed(svg);
    expect(svg.match(/<polyline/g)).toHaveLength(4);
    expect(svg).toContain('a &lt;b&gt; &amp; c');
    expect(svg).toContain('baseline &quot;fs&quot;');
    for (const p of PERCENTILES) expect(svg).toContain(`>p${p}<`);
  });

  it('a run without latency says so instead of drawing it', () => {
    const svg = runChart('t', 'MiB/s', [{ label: 'driver', perSecond: [1, 2], latencyUs: null }]);
    wellFormed(svg);
    expect(svg).toContain('latency not measured');
    expect(svg.match(/<polyline/g)).toHaveLength(1);
  });

  it('ratio bars are scaled to the first side of each group, with their ranges', () => {
    const svg = ratioChart(
      'vs kernel',
      ['kernel', 'driver'],
      [
        {
          name: '4 KiB',
          bars: [
            { median: 100, min: 90, max: 110 },
            { median: 150, min: 140, max: 160 },
          ],
        },
        {
          name: '1 MiB',
          bars: [
            { median: 400, min: 390, max: 410 },
            { median: 200, min: 180, max: 220 },
          ],
        },
        { name: 'not run by the driver', bars: [{ median: 10, min: 9, max: 11 }, null] },
      ],
    );
    wellFormed(svg);
    expect(svg).toContain('>1.50<');
    expect(svg).toContain('>0.50<');
    expect(svg.match(/<rect x="270" y="\d+" width="[\d.]+" height="16"/g)).toHaveLength(5);
  });

  it('blkbench --plot writes the chart of the run it reports, with its baseline', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'blkbench-plot-'));
    try {
      const file = join(dir, 'run.svg');
      const { code, out } = await runMain(main, ['--runtime', '1.2', '--size', '4m', '--baseline', '--plot', file]);
      expect(code).toBe(0);
      expect(out).toContain('baseline');
      const svg = readFileSync(file, 'utf8');
      wellFormed(svg);
      expect(svg).toContain('baseline: Node fs on the same image');
      expect(svg.match(/<polyline/g)!.length).toBeGreaterThanOrEqual(4);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
