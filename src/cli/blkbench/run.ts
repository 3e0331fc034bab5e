/**
 * Runs one job on one engine: an optional --verify lay-out, an optional
 * ramp, the measured phase with `iodepth` I/Os in flight, and an optional
 * read-back. Each slot owns one buffer for the whole run and latencies go
 * into a fixed histogram, so the harness allocates nothing per I/O beyond
 * the engine's own promise.
 */
import { readFileSync, readdirSync, readlinkSync } from 'node:fs';
import { Histogram } from './histogram.js';
import { Workload, checkPattern, fillPattern, type Mismatch } from './workload.js';
import type { BenchOptions } from './options.js';

/** What the driver (or the target under it) counted; null fields are not known for that engine. */
export interface EngineCounters {
  /** Ring requests sent. */
  requests: number;
  notifications: number;
  interrupts: number;
  responses: number;
  /** Busy polls that found responses, and that gave up (with --poll-us). */
  polls: number;
  pollMisses: number;
  poolHits: number;
  poolFallbacks: number;
  /** Takes that waited for pooled pages (the pools at their largest, or fresh grants capped). */
  poolWaits: number;
  /** Grant map and unmap operations in the backend (the simulated one only). */
  backendMaps: number | null;
  backendUnmaps: number | null;
  /** Times the backend went away and the device reconnected and replayed. */
  reconnects: number;
}

/** Something blkbench can drive: the block device, or a file through Node fs. */
export interface IoEngine {
  readonly label: string;
  /** Bytes addressable. */
  readonly size: number;
  readonly sectorSize: number;
  read(offset: number, buf: Uint8Array): Promise<void>;
  write(offset: number, buf: Uint8Array): Promise<void>;
  /** An I/O buffer of `bytes` bytes, of the kind this engine does I/O on best. */
  buffer(bytes: number): Uint8Array;
  /** Cumulative counters (null for an engine with none, like Node fs). */
  counters(): EngineCounters | null;
}

export interface RunHooks {
  /** After the ramp (or before the measured phase when there is none). */
  afterRamp?(): void | Promise<void>;
  /** After the measured phase, before the --verify read-back. */
  afterRun?(): void | Promise<void>;
  /** Progress while measuring, about once a second. */
  progress?(p: { elapsed: number; ios: number; bytes: number; total: number | undefined; runtime: number | undefined }): void;
}

export interface JobResult {
  ios: number;
  reads: number;
  writes: number;
  bytes: number;
  seconds: number;
  lat: Histogram;
  cpu: { user: number; system: number };
  /** The whole machine's busy CPU seconds over the measured phase (all processes, interrupts included), when /proc/stat is there. */
  machineBusy: number | null;
  /** The main (the driver's) thread's CPU seconds over the measured phase, when /proc is there. */
  threadCpu: number | null;
  /** CPU seconds over the measured phase by thread name (the process's threads: V8's, libuv's, the backend's), when /proc is there. */
  threads: Record<string, number> | null;
  /** Counter increase over the measured phase (null for engines without counters). */
  counters: EngineCounters | null;
  /** Blocks found not to hold what was last written (null without --verify). */
  verifyMismatches: number | null;
  /** Blocks compared, inline and in the read-back. */
  verifyChecked: number;
  firstMismatch: Mismatch | null;
  /** One I/O in this many was timed (0: none, --no-latency). */
  latEvery: number;
  /** What one clock read cost at start, in ns. */
  clockNs: number;
  /** I/Os completed in each whole second from the first one, warm-up included. */
  perSecond: number[];
}

/**
 * What one `performance.now()` costs here, in ns: the median of a few
 * batches. Where the clock is a vDSO read this is tens of ns; on a Xen PV
 * guest whose clock source is not stable enough for the vDSO it is a system
 * call, microseconds under emulation.
 */
export function clockCostNs(): number {
  const batches: number[] = [];
  for (let b = 0; b < 5; b++) {
    const n = 200;
    const t0 = performance.now();
    let t = t0;
    for (let i = 0; i < n; i++) t = performance.now();
    batches.push(((t - t0) * 1e6) / n);
  }
  batches.sort((a, b) => a - b);
  return batches[2]!;
}

/** Clock reads per I/O the timing may cost on average: two per timed I/O, at most this many ns. */
const CLOCK_BUDGET_NS = 300;
const MAX_LAT_EVERY = 64;

/**
 * One I/O in how many to time, fio's choice made from the measured cost: every
 * one where two clock reads fit {@link CLOCK_BUDGET_NS}, else the smallest
 * power of two that brings the average within it (at most 1 in 64).
 */
export function latencySampling(clockNs: number): number {
  let every = 1;
  while (every < MAX_LAT_EVERY && (2 * clockNs) / every > CLOCK_BUDGET_NS) every *= 2;
  return every;
}

/** An I/O failed: the run stops, and says where. */
export class IoFailure extends Error {
  constructor(
    readonly offset: number,
    readonly write: boolean,
    override readonly cause: unknown,
  ) {
    super(`${write ? 'write' : 'read'} at byte ${offset}: ${cause instanceof Error ? cause.message : String(cause)}`);
  }
}

function diff(a: EngineCounters | null, b: EngineCounters | null): EngineCounters | null {
  if (a === null || b === null) return null;
  const d = (x: number | null, y: number | null): number | null => (x === null || y === null ? null : x - y);
  return {
    requests: a.requests - b.requests,
    notifications: a.notifications - b.notifications,
    interrupts: a.interrupts - b.interrupts,
    responses: a.responses - b.responses,
    polls: a.polls - b.polls,
    pollMisses: a.pollMisses - b.pollMisses,
    poolHits: a.poolHits - b.poolHits,
    poolFallbacks: a.poolFallbacks - b.poolFallbacks,
    poolWaits: a.poolWaits - b.poolWaits,
    backendMaps: d(a.backendMaps, b.backendMaps),
    backendUnmaps: d(a.backendUnmaps, b.backendUnmaps),
    reconnects: a.reconnects - b.reconnects,
  };
}

interface Phase {
  /** Stop issuing after this many I/Os (Infinity: no limit). */
  limit: number;
  /** Stop issuing at this performance.now() (Infinity: no deadline). */
  deadline: number;
  record: boolean;
}

export async function runJob(engine: IoEngine, o: BenchOptions, hooks: RunHooks = {}): Promise<JobResult> {
  const region = o.size ?? engine.size - o.offset;
  if (o.bs % engine.sectorSize !== 0) throw new Error(`--bs ${o.bs} is not a multiple of the disk's ${engine.sectorSize}-byte sectors`);
  if (o.offset % engine.sectorSize !== 0)
    throw new Error(`--offset ${o.offset} is not a multiple of the disk's ${engine.sectorSize}-byte sectors`);
  if (o.offset + region > engine.size || region < o.bs) {
    throw new Error(`the region (--offset ${o.offset}, --size ${region}) does not fit the ${engine.size}-byte disk`);
  }
  const wl = new Workload(o.rw, o.rwmixread, o.bs, region, o.seed);
  const depth = o.verify ? Math.min(o.iodepth, wl.blocks) : o.iodepth;
  const bufs = Array.from({ length: depth }, () => engine.buffer(o.bs));
  const scratch = new Uint8Array(o.bs);
  // --verify: the generation each block holds (0: unknown), and which blocks have I/O in flight.
  const gen = o.verify ? new Uint32Array(wl.blocks) : null;
  const busy = o.verify ? new Uint8Array(wl.blocks) : null;
  const bad = o.verify ? new Uint8Array(wl.blocks) : null;
  const lat = new Histogram();
  let mismatches = 0;
  let checked = 0;
  let firstMismatch: Mismatch | null = null;
  let ios = 0;
  // Every completion, warm-up included, for the per-second series.
  let done = 0;
  let reads = 0;
  let writes = 0;
  let failure: IoFailure | null = null;

  const check = (b: number, buf: Uint8Array): void => {
    const g = gen![b]!;
    if (g === 0) return;
    checked++;
    const m = checkPattern(buf, o.offset + b * o.bs, g, o.seed, scratch);
    if (m !== null && bad![b] === 0) {
      bad![b] = 1;
      mismatches++;
      firstMismatch ??= m;
    }
  };

  const runPhase = async (p: Phase): Promise<void> => {
    let issued = 0;
    // The deadline is a timer, not a clock read per I/O: on some guests (Xen PV) reading the clock is a system call.
    let expired = performance.now() >= p.deadline;
    const timer =
      p.deadline === Infinity || expired
        ? undefined
        : setTimeout(() => {
            expired = true;
          }, p.deadline - performance.now());
    // Time one I/O in `every` (a power of two): the mask picks them without a division.
    const mask = latEvery - 1;
    let n = 0;
    const slot = async (buf: Uint8Array): Promise<void> => {
      while (failure === null && issued < p.limit && !expired) {
        issued++;
        let b = wl.next();
        if (busy !== null) {
          // Two I/Os on one block at once would make its contents ambiguous: take the next free one.
          while (busy[b] !== 0) b = b + 1 === wl.blocks ? 0 : b + 1;
          busy[b] = 1;
        }
        const write = wl.write;
        const at = o.offset + b * o.bs;
        let g = 0;
        if (write && gen !== null) {
          g = (gen[b]! + 1) >>> 0 || 1;
          gen[b] = 0; // unknown until the write succeeds
          fillPattern(buf, at, g, o.seed);
        }
        const t0 = latEvery !== 0 && (n++ & mask) === 0 ? performance.now() : -1;
        try {
          if (write) await engine.write(at, buf);
          else await engine.read(at, buf);
        } catch (err) {
          failure ??= new IoFailure(at, write, err);
          return;
        }
        done++;
        if (p.record) {
          if (t0 >= 0) lat.record((performance.now() - t0) * 1e6);
          ios++;
          if (write) writes++;
          else reads++;
        }
        if (busy !== null) {
          if (write) gen![b] = g;
          else check(b, buf);
          busy[b] = 0;
        }
      }
    };
    try {
      await Promise.all(bufs.map(slot));
    } finally {
      clearTimeout(timer);
    }
    if (failure !== null) throw failure;
  };

  /** Writes (or reads and checks) every block once, in order, `depth` at a time. */
  const sweep = async (write: boolean): Promise<void> => {
    let next = 0;
    const slot = async (buf: Uint8Array): Promise<void> => {
      while (next < wl.blocks) {
        const b = next++;
        const at = o.offset + b * o.bs;
        if (write) {
          fillPattern(buf, at, 1, o.seed);
          await engine.write(at, buf);
          gen![b] = 1;
        } else if (gen![b] !== 0) {
          await engine.read(at, buf);
          check(b, buf);
        }
      }
    };
    await Promise.all(bufs.map(slot));
  };

  if (o.verify) await sweep(true);
  const clockNs = clockCostNs();
  const latEvery = !o.latency ? 0 : (o.latEvery ?? latencySampling(clockNs));
  const perSecond: number[] = [];
  let counted = 0;
  const ticker = setInterval(() => {
    perSecond.push(done - counted);
    counted = done;
  }, 1000);
  ticker.unref();
  try {
    if (o.rampTime > 0) await runPhase({ limit: Infinity, deadline: performance.now() + o.rampTime * 1000, record: false });
    await hooks.afterRamp?.();
  } catch (err) {
    clearInterval(ticker);
    throw err;
  }

  const total = o.numberIos ?? (o.runtime === undefined ? wl.blocks : undefined);
  const c0 = engine.counters();
  const cpu0 = process.cpuUsage();
  const busy0 = machineBusySeconds();
  const tasks0 = taskCpuSeconds();
  const t0 = performance.now();
  let timer: NodeJS.Timeout | undefined;
  if (hooks.progress !== undefined) {
    const report = hooks.progress.bind(hooks);
    timer = setInterval(
      () => report({ elapsed: (performance.now() - t0) / 1000, ios, bytes: ios * o.bs, total, runtime: o.runtime }),
      1000,
    );
    timer.unref();
  }
  try {
    await runPhase({
      limit: total ?? Infinity,
      deadline: o.runtime === undefined ? Infinity : t0 + o.runtime * 1000,
      record: true,
    });
  } finally {
    clearInterval(timer);
    clearInterval(ticker);
  }
  const seconds = (performance.now() - t0) / 1000;
  const cpu = process.cpuUsage(cpu0);
  const busy1 = machineBusySeconds();
  const tasks1 = taskCpuSeconds();
  const counters = diff(engine.counters(), c0);

  await hooks.afterRun?.();
  if (o.verify) await sweep(false);
  return {
    ios,
    reads,
    writes,
    bytes: ios * o.bs,
    seconds,
    lat,
    cpu: { user: cpu.user / 1e6, system: cpu.system / 1e6 },
    machineBusy: busy0 === null || busy1 === null ? null : busy1 - busy0,
    threadCpu: mainThreadCpu(tasks0, tasks1),
    threads: tasks0 === null || tasks1 === null ? null : byName(tasks0, tasks1),
    counters,
    verifyMismatches: o.verify ? mismatches : null,
    verifyChecked: checked,
    firstMismatch,
    latEvery,
    clockNs,
    perSecond,
  };
}

/** Linux's USER_HZ: /proc/stat counts in these ticks on every architecture. */
const USER_HZ = 100;

/**
 * Busy CPU seconds of the whole machine since boot, from /proc/stat (user,
 * nice, system, irq, softirq; not idle, iowait or steal), or null where
 * there is no /proc/stat. A kernel driver does its work in interrupt context,
 * outside any process, so comparing CPU per I/O against one needs this.
 */
export function machineBusySeconds(): number | null {
  let line: string;
  try {
    line = readFileSync('/proc/stat', 'latin1').split('\n', 1)[0] ?? '';
  } catch {
    return null;
  }
  const v = line.trim().split(/\s+/).slice(1).map(Number);
  if (v.length < 7 || v.some((x) => !Number.isFinite(x))) return null;
  const [user = 0, nice = 0, system = 0, , , irq = 0, softirq = 0] = v;
  return (user + nice + system + irq + softirq) / USER_HZ;
}

/**
 * CPU seconds (user and system) in a /proc `stat` file (a process's or a
 * thread's), or null where there is none.
 */
export function statCpuSeconds(path: string): number | null {
  try {
    return cpuOfStat(readFileSync(path, 'latin1'));
  } catch {
    return null;
  }
}

/** The user and system time a /proc `stat` line holds, in seconds. */
function cpuOfStat(stat: string): number | null {
  // The command name, in parentheses, may hold spaces: the fields start after its last ')'.
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const utime = Number(f[11]);
  const stime = Number(f[12]);
  return Number.isFinite(utime) && Number.isFinite(stime) ? (utime + stime) / USER_HZ : null;
}

interface Task {
  name: string;
  cpu: number;
}

/**
 * The thread that runs this job's driver: the main thread (whose id is the
 * process's), or a job's worker thread with --numjobs.
 */
const SELF_TID = ((): string => {
  try {
    return readlinkSync('/proc/thread-self').split('/').pop()!;
  } catch {
    return String(process.pid);
  }
})();
const SELF_NAME = SELF_TID === String(process.pid) ? 'main' : 'this job';

/** Each thread of this process, by id: its name and CPU seconds so far (null without /proc). */
function taskCpuSeconds(): Map<string, Task> | null {
  let ids: string[];
  try {
    ids = readdirSync('/proc/self/task');
  } catch {
    return null;
  }
  const out = new Map<string, Task>();
  for (const id of ids) {
    let stat: string;
    try {
      stat = readFileSync(`/proc/self/task/${id}/stat`, 'latin1');
    } catch {
      continue; // the thread ended between the listing and the read
    }
    // The main thread (the driver's; on the simulated host the backend's workers are others) by role; the rest by name.
    const name = id === SELF_TID ? SELF_NAME : `${stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')'))} (other threads)`;
    const cpu = cpuOfStat(stat);
    if (cpu !== null) out.set(id, { name, cpu });
  }
  return out;
}

/** The main (the driver's) thread's CPU seconds between two samples, or null without them. */
function mainThreadCpu(a: Map<string, Task> | null, b: Map<string, Task> | null): number | null {
  const t0 = a?.get(SELF_TID);
  const t1 = b?.get(SELF_TID);
  return t0 === undefined || t1 === undefined ? null : t1.cpu - t0.cpu;
}

/** CPU spent between two samples, summed by thread name; threads born in between count from zero. */
function byName(a: Map<string, Task>, b: Map<string, Task>): Record<string, number> {
  const sums: Record<string, number> = {};
  for (const [id, t] of b) {
    const d = t.cpu - (a.get(id)?.cpu ?? 0);
    if (d > 0) sums[t.name] = Math.round(((sums[t.name] ?? 0) + d) * 100) / 100;
  }
  return sums;
}
