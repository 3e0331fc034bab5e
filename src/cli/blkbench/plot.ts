/**
 * Charts as one self-contained SVG (no script, no font or file fetched), for
 * people who would rather look than read: blkbench's `--plot` (the rate over
 * the run, second by second, and the latency percentiles, the driver beside
 * its baseline), and the grouped bars the docs use for the suite's
 * comparison against the kernel.
 */

/** One line on a chart: a label and its points. */
export interface Line {
  label: string;
  points: Array<[number, number]>;
}

const COLORS = ['#1f6feb', '#d1242f', '#8250df', '#1a7f37'];
const FONT = 'font-family="sans-serif" font-size="12"';
const TITLE = 'font-family="sans-serif" font-size="14" font-weight="bold"';

function esc(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}

/** A round step for about `n` ticks up to `max`. */
function step(max: number, n = 5): number {
  if (!(max > 0)) return 1;
  const raw = max / n;
  const p = 10 ** Math.floor(Math.log10(raw));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= raw) return m * p;
  return 10 * p;
}

function num(v: number): string {
  if (v >= 1e6) return `${+(v / 1e6).toFixed(1)}M`;
  if (v >= 1e4) return `${+(v / 1e3).toFixed(0)}k`;
  return `${+v.toFixed(v < 10 ? 2 : 0)}`;
}

interface Panel {
  x: number;
  y: number;
  w: number;
  h: number;
  title: string;
  xLabel: string;
  yLabel: string;
}

/** Axes, grid and title of a panel, and the function that places a point. */
function frame(
  p: Panel,
  xMax: number,
  yMax: number,
  xTicks: Array<[number, string]> | null,
): { out: string[]; at: (x: number, y: number) => string } {
  const ys = step(yMax);
  const top = Math.max(ys, Math.ceil(yMax / ys) * ys);
  const at = (x: number, y: number) => `${(p.x + (x / (xMax || 1)) * p.w).toFixed(1)},${(p.y + p.h - (y / top) * p.h).toFixed(1)}`;
  const out = [
    `<text x="${p.x + p.w / 2}" y="${p.y - 10}" text-anchor="middle" ${FONT} font-weight="bold">${esc(p.title)}</text>`,
    `<rect x="${p.x}" y="${p.y}" width="${p.w}" height="${p.h}" fill="none" stroke="#888"/>`,
  ];
  for (let v = 0; v <= top + 1e-9; v += ys) {
    const y = p.y + p.h - (v / top) * p.h;
    out.push(`<line x1="${p.x}" y1="${y.toFixed(1)}" x2="${p.x + p.w}" y2="${y.toFixed(1)}" stroke="#ddd"/>`);
    out.push(`<text x="${p.x - 6}" y="${(y + 4).toFixed(1)}" text-anchor="end" ${FONT}>${num(v)}</text>`);
  }
  const ticks =
    xTicks ??
    Array.from({ length: Math.floor(xMax / step(xMax)) + 1 }, (_, i) => [i * step(xMax), num(i * step(xMax))] as [number, string]);
  for (const [v, label] of ticks) {
    const x = p.x + (v / (xMax || 1)) * p.w;
    out.push(`<text x="${x.toFixed(1)}" y="${p.y + p.h + 16}" text-anchor="middle" ${FONT}>${esc(label)}</text>`);
  }
  out.push(`<text x="${p.x + p.w / 2}" y="${p.y + p.h + 34}" text-anchor="middle" ${FONT}>${esc(p.xLabel)}</text>`);
  out.push(
    `<text x="${p.x - 48}" y="${p.y + p.h / 2}" text-anchor="middle" ${FONT} transform="rotate(-90 ${p.x - 48} ${p.y + p.h / 2})">${esc(p.yLabel)}</text>`,
  );
  return { out, at };
}

function legend(x: number, y: number, labels: string[]): string[] {
  return labels.flatMap((l, i) => [
    `<rect x="${x}" y="${y + i * 18 - 9}" width="12" height="12" fill="${COLORS[i % COLORS.length]}"/>`,
    `<text x="${x + 18}" y="${y + i * 18 + 2}" ${FONT}>${esc(l)}</text>`,
  ]);
}

function svg(w: number, h: number, body: string[]): string {
  return (
    `<svg xmlns="http://www.w3.org/2000/svg" width="${w}" height="${h}" viewBox="0 0 ${w} ${h}">\n` +
    `<rect width="100%" height="100%" fill="white"/>\n${body.join('\n')}\n</svg>\n`
  );
}

/** The percentiles the latency panel shows, as fio-plot's percentile charts do. */
export const PERCENTILES = [50, 90, 99, 99.9, 99.99];

/**
 * blkbench's picture of a run: on the left the rate in each second (warm-up
 * included: the shape of the start is the point), on the right the latency
 * at each of {@link PERCENTILES}. One line per run (the driver, then its
 * baseline), so the two can be compared by eye.
 */
export function runChart(
  title: string,
  unit: string,
  runs: Array<{ label: string; perSecond: number[]; latencyUs: number[] | null }>,
): string {
  const W = 900;
  const H = 380;
  const rate: Panel = { x: 70, y: 50, w: 360, h: 240, title: `${unit} in each second`, xLabel: 'seconds from the first I/O', yLabel: unit };
  const lat: Panel = { x: 530, y: 50, w: 340, h: 240, title: 'latency by percentile', xLabel: 'percentile', yLabel: 'µs' };
  const seconds = Math.max(1, ...runs.map((r) => r.perSecond.length));
  const yRate = Math.max(1, ...runs.flatMap((r) => r.perSecond));
  const body = [`<text x="${W / 2}" y="22" text-anchor="middle" ${TITLE}>${esc(title)}</text>`];
  const f = frame(rate, seconds, yRate, null);
  body.push(...f.out);
  runs.forEach((r, i) => {
    // Each second's count is plotted at the end of its second.
    const pts = r.perSecond.map((v, s) => f.at(s + 1, v)).join(' ');
    if (pts !== '')
      body.push(`<polyline points="${f.at(0, 0)} ${pts}" fill="none" stroke="${COLORS[i % COLORS.length]}" stroke-width="2"/>`);
  });
  const timed = runs.filter((r) => r.latencyUs !== null && r.latencyUs.some((v) => v > 0));
  if (timed.length === 0) {
    body.push(`<text x="${lat.x + lat.w / 2}" y="${lat.y + lat.h / 2}" text-anchor="middle" ${FONT}>latency not measured</text>`);
  } else {
    const yLat = Math.max(1, ...timed.flatMap((r) => r.latencyUs!));
    const g = frame(
      lat,
      PERCENTILES.length - 1,
      yLat,
      PERCENTILES.map((p, i) => [i, `p${p}`]),
    );
    body.push(...g.out);
    runs.forEach((r, i) => {
      if (r.latencyUs === null) return;
      const pts = r.latencyUs.map((v, k) => g.at(k, v)).join(' ');
      body.push(`<polyline points="${pts}" fill="none" stroke="${COLORS[i % COLORS.length]}" stroke-width="2"/>`);
      for (let k = 0; k < r.latencyUs.length; k++) {
        const [x, y] = g.at(k, r.latencyUs[k]!).split(',');
        body.push(`<circle cx="${x}" cy="${y}" r="3" fill="${COLORS[i % COLORS.length]}"/>`);
      }
    });
  }
  body.push(
    ...legend(
      70,
      H - 30,
      runs.map((r) => r.label),
    ),
  );
  return svg(W, H, body);
}

/** One group of bars: a workload, each side's median with its range (null: that side did not run it). */
export interface BarGroup {
  name: string;
  bars: Array<{ median: number; min: number; max: number } | null>;
}

/**
 * Grouped bars with range whiskers, scaled to the first side of each group
 * (so every group reads as a ratio, whatever its unit): the docs' picture of
 * the suite's comparison.
 */
export function ratioChart(title: string, sides: string[], groups: BarGroup[]): string {
  const rowH = 22 * sides.length + 16;
  const left = 270;
  const plotW = 520;
  const H = 70 + groups.length * rowH + 30 + sides.length * 18;
  const W = left + plotW + 60;
  const ratios = groups.flatMap((g) => g.bars.map((b) => (b === null ? 0 : b.max / (g.bars[0]?.median || 1))));
  const xMax = Math.max(1.2, ...ratios);
  const xs = step(xMax, 6);
  const top = Math.ceil(xMax / xs) * xs;
  const X = (v: number) => left + (v / top) * plotW;
  const body = [`<text x="${W / 2}" y="22" text-anchor="middle" ${TITLE}>${esc(title)}</text>`];
  const y0 = 44;
  const y1 = y0 + groups.length * rowH;
  for (let v = 0; v <= top + 1e-9; v += xs) {
    body.push(
      `<line x1="${X(v).toFixed(1)}" y1="${y0}" x2="${X(v).toFixed(1)}" y2="${y1}" stroke="${Math.abs(v - 1) < 1e-9 ? '#555' : '#ddd'}"/>`,
    );
    body.push(`<text x="${X(v).toFixed(1)}" y="${y1 + 16}" text-anchor="middle" ${FONT}>${+v.toFixed(2)}×</text>`);
  }
  groups.forEach((g, gi) => {
    const base = g.bars[0]?.median || 1;
    const gy = y0 + gi * rowH + 8;
    body.push(`<text x="${left - 8}" y="${gy + (rowH - 16) / 2 + 4}" text-anchor="end" ${FONT}>${esc(g.name)}</text>`);
    g.bars.forEach((b, i) => {
      if (b === null) return;
      const y = gy + i * 22;
      const c = COLORS[i % COLORS.length];
      body.push(`<rect x="${left}" y="${y}" width="${(X(b.median / base) - left).toFixed(1)}" height="16" fill="${c}" opacity="0.8"/>`);
      body.push(
        `<line x1="${X(b.min / base).toFixed(1)}" y1="${y + 8}" x2="${X(b.max / base).toFixed(1)}" y2="${y + 8}" stroke="#222" stroke-width="1.5"/>`,
      );
      body.push(`<text x="${(X(b.max / base) + 6).toFixed(1)}" y="${y + 12}" ${FONT}>${(b.median / base).toFixed(2)}</text>`);
    });
  });
  body.push(...legend(left, y1 + 40, sides));
  return svg(W, H, body);
}
