/**
 * Reads a V8 .cpuprofile (blkbench --cpu-profile) into where the time went:
 * self time by function and by part (the driver's own code, the xenstore
 * client, the benchmark, Node's internals, koffi's FFI calls, the garbage
 * collector, idle). `node dist/bench/cpuprofile.js FILE [TOP]` prints it; the
 * Xen suite's profile run prints it into the console.
 */
import { readFileSync } from 'node:fs';
import { basename } from 'node:path';
import { pathToFileURL } from 'node:url';

interface CallFrame {
  functionName: string;
  url: string;
  lineNumber: number;
}
interface ProfileNode {
  id: number;
  callFrame: CallFrame;
}
export interface CpuProfile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
  startTime: number;
  endTime: number;
}

export interface ProfileSummary {
  /** Microseconds sampled in all. */
  totalUs: number;
  /** Self time by part, µs, largest first. */
  parts: Array<[string, number]>;
  /** Self time by function ("name file:line"), µs, largest first. */
  functions: Array<[string, number]>;
}

/** Which part of the program a frame belongs to. */
function partOf(f: CallFrame): string {
  const u = f.url;
  if (u === '') {
    if (f.functionName === '(garbage collector)') return 'garbage collector';
    if (f.functionName === '(idle)') return 'idle (waiting in the event loop)';
    if (f.functionName === '(program)') return 'native (V8, libuv, system calls)';
    return `native: ${f.functionName || '(anonymous)'}`;
  }
  if (u.includes('/node_modules/koffi/')) return 'koffi (FFI)';
  if (u.includes('/node_modules/')) return 'other packages';
  if (u.startsWith('node:')) return 'Node internals';
  const m = /\/(src\/[a-z_]+|examples\/[a-z_]+|bench|test)\//.exec(u);
  return m?.[1] ?? 'other';
}

export function summarize(p: CpuProfile): ProfileSummary {
  const byId = new Map<number, ProfileNode>();
  for (const n of p.nodes) byId.set(n.id, n);
  const parts = new Map<string, number>();
  const fns = new Map<string, number>();
  let total = 0;
  for (let i = 0; i < p.samples.length; i++) {
    const node = byId.get(p.samples[i]!);
    const dt = p.timeDeltas[i] ?? 0;
    if (node === undefined || dt <= 0) continue;
    total += dt;
    const f = node.callFrame;
    const part = partOf(f);
    parts.set(part, (parts.get(part) ?? 0) + dt);
    const name = f.url === '' ? f.functionName : `${f.functionName || '(anonymous)'} ${basename(f.url)}:${f.lineNumber + 1}`;
    fns.set(name, (fns.get(name) ?? 0) + dt);
  }
  const sorted = (m: Map<string, number>) => [...m].sort((a, b) => b[1] - a[1]);
  return { totalUs: total, parts: sorted(parts), functions: sorted(fns) };
}

/** The summary as lines: parts, then the `top` functions, each with its share of the sampled time. */
export function describe(s: ProfileSummary, top = 25): string[] {
  const pct = (us: number) => `${((100 * us) / Math.max(1, s.totalUs)).toFixed(1).padStart(5)}%`;
  return [
    `sampled ${(s.totalUs / 1e6).toFixed(2)} s`,
    ...s.parts.map(([k, us]) => `part ${pct(us)}  ${k}`),
    ...s.functions.slice(0, top).map(([k, us]) => `self ${pct(us)}  ${k}`),
  ];
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const file = process.argv[2];
  if (file === undefined) {
    console.error('usage: node dist/bench/cpuprofile.js FILE.cpuprofile [TOP]');
    process.exit(2);
  }
  const profile = JSON.parse(readFileSync(file, 'utf8')) as CpuProfile;
  for (const line of describe(summarize(profile), Number(process.argv[3] ?? 25))) console.log(line);
}
