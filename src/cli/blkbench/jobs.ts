/**
 * --numjobs N: N worker threads, each with a queue of the device of its own
 * (ring, event channel, grant pool: see openThreadedDevice) and a job of its
 * own on it, as fio's numjobs runs N copies of a job. The jobs run the same
 * workload with seeds seed, seed+1, …; with --verify each takes its own
 * slice of the region, so no two write the same block. Their figures are
 * summed (latencies merged, time the longest).
 */
import { MessageChannel, Worker } from 'node:worker_threads';
import type { QueueThread } from '../../blkfront/queue_thread.js';
import { openThreadedDisk, type OpenedDisk } from '../common/disk.js';
import type { ThreadedDevice } from '../../blkfront/threaded.js';
import { Histogram, type HistogramData } from './histogram.js';
import type { BenchOptions } from './options.js';
import type { EngineCounters, IoEngine, JobResult } from './run.js';
import { countersOf } from './targets.js';

/** What a job's thread tells blkbench. */
export type JobMessage =
  { kind: 'connected' } | { kind: 'done'; result: Omit<JobResult, 'lat'> & { lat: HistogramData } } | { kind: 'failed'; message: string };

/** The job thread's compiled entry point (under a TypeScript loader, the build's JS). */
function workerUrl(): URL {
  return import.meta.url.endsWith('.ts')
    ? new URL('../../../dist/src/cli/blkbench/job_worker.js', import.meta.url)
    : new URL('./job_worker.js', import.meta.url);
}

/** A queue thread as blkbench's engine. */
export function queueEngine(q: QueueThread, zeroCopy: boolean): IoEngine {
  return {
    label: 'driver',
    size: q.size,
    sectorSize: q.sectorSize,
    read: (offset, buf) => q.readInto(offset, buf),
    write: (offset, buf) => q.write(offset, buf),
    buffer: (bytes) => (zeroCopy ? q.allocBuffer(bytes) : new Uint8Array(bytes)),
    // The backend's counters are the device thread's to read (the simulated one only): not here.
    counters: () => countersOf(q.stats()),
  };
}

/** Job `j` of `n`: its seed, and with --verify its own slice of the region. */
export function jobOptions(o: BenchOptions, j: number, n: number, diskSize: number): BenchOptions {
  const seed = (o.seed + j) >>> 0;
  if (!o.verify) return { ...o, seed };
  const region = o.size ?? diskSize - o.offset;
  const slice = Math.floor(region / n / o.bs) * o.bs;
  if (slice < o.bs) throw new Error(`--verify with --numjobs ${n}: the region of ${region} bytes has less than one --bs block per job`);
  return { ...o, seed, offset: o.offset + j * slice, size: slice };
}

/** The jobs' results as one: counts summed, latencies merged, the longest time, the process's CPU once. */
export function mergeJobs(rs: readonly JobResult[]): JobResult {
  const first = rs[0]!;
  const lat = new Histogram();
  for (const r of rs) lat.add(r.lat);
  const sum = (f: (r: JobResult) => number): number => rs.reduce((a, r) => a + f(r), 0);
  const sumOrNull = (f: (r: JobResult) => number | null): number | null => (rs.some((r) => f(r) === null) ? null : sum((r) => f(r)!));
  let counters: EngineCounters | null = null;
  if (rs.every((r) => r.counters !== null)) {
    const c = { ...first.counters! };
    for (const r of rs.slice(1)) {
      for (const k of Object.keys(c) as Array<keyof EngineCounters>) {
        const a = c[k];
        const b = r.counters![k];
        c[k] = (a === null || b === null ? null : a + b) as never;
      }
    }
    counters = c;
  }
  const longest = Math.max(...rs.map((r) => r.perSecond.length));
  // Each job's process CPU and machine time cover the whole process over its own phase; the phases overlap, so the largest.
  const byCpu = rs.reduce((a, r) => (r.cpu.user + r.cpu.system > a.cpu.user + a.cpu.system ? r : a));
  return {
    ios: sum((r) => r.ios),
    reads: sum((r) => r.reads),
    writes: sum((r) => r.writes),
    bytes: sum((r) => r.bytes),
    seconds: Math.max(...rs.map((r) => r.seconds)),
    lat,
    cpu: byCpu.cpu,
    machineBusy: rs.some((r) => r.machineBusy === null) ? null : Math.max(...rs.map((r) => r.machineBusy!)),
    // The job threads' own CPU together: the driver's.
    threadCpu: sumOrNull((r) => r.threadCpu),
    threads: byCpu.threads,
    counters,
    verifyMismatches: sumOrNull((r) => r.verifyMismatches),
    verifyChecked: sum((r) => r.verifyChecked),
    firstMismatch: rs.find((r) => r.firstMismatch !== null)?.firstMismatch ?? null,
    latEvery: first.latEvery,
    clockNs: first.clockNs,
    perSecond: Array.from({ length: longest }, (_, i) => sum((r) => r.perSecond[i] ?? 0)),
  };
}

/** The device opened with one queue per job thread, and the threads, ready to run. */
export interface JobThreads {
  disk: OpenedDisk<ThreadedDevice>;
  /** Starts every job at once; resolves to their results, merged. */
  run(): Promise<JobResult>;
  close(): Promise<void>;
}

/** Starts `o.numjobs` job threads and opens the disk with a queue for each. */
export async function startJobs(o: BenchOptions, spec: Parameters<typeof openThreadedDisk>[0], driverOptions: object): Promise<JobThreads> {
  const n = o.numjobs;
  const workers: Worker[] = [];
  const ports = [];
  const connected: Array<Promise<void>> = [];
  const results: Array<Promise<JobResult>> = [];
  let disk: OpenedDisk<ThreadedDevice> | null = null;
  const stop = async (): Promise<void> => {
    await disk?.close().catch(() => undefined);
    await Promise.all(workers.map((w) => w.terminate()));
  };
  try {
    for (let j = 0; j < n; j++) {
      const { port1, port2 } = new MessageChannel();
      const w = new Worker(workerUrl(), { workerData: { port: port2, zeroCopy: o.zeroCopy }, transferList: [port2] });
      workers.push(w);
      ports.push(port1);
      const messages: JobMessage[] = [];
      const waiters: Array<(m: JobMessage) => void> = [];
      const failure = new Promise<never>((_, reject) => {
        w.once('error', reject);
        w.once('exit', (code) => reject(new Error(`job ${j}'s thread exited (code ${code}) before it finished`)));
      });
      failure.catch(() => undefined);
      w.on('message', (m: JobMessage) => {
        const wait = waiters.shift();
        if (wait !== undefined) wait(m);
        else messages.push(m);
      });
      const next = (): Promise<JobMessage> =>
        Promise.race([new Promise<JobMessage>((r) => (messages.length > 0 ? r(messages.shift()!) : waiters.push(r))), failure]);
      const expect = async (kind: JobMessage['kind']): Promise<JobMessage> => {
        const m = await next();
        if (m.kind === 'failed') throw new Error(`job ${j}: ${m.message}`);
        if (m.kind !== kind) throw new Error(`job ${j}: ${m.kind} where ${kind} was expected`);
        return m;
      };
      connected.push(expect('connected').then(() => undefined));
      results.push(
        connected[j]!.then(async () => {
          const m = (await expect('done')) as Extract<JobMessage, { kind: 'done' }>;
          return { ...m.result, lat: Histogram.from(m.result.lat) };
        }),
      );
      for (const p of [...connected, ...results]) p.catch(() => undefined);
    }
    disk = await openThreadedDisk(spec, 'blkbench', ports, driverOptions);
    await Promise.all(connected);
  } catch (err) {
    await stop();
    throw err;
  }
  const d = disk;
  return {
    disk: d,
    run: async () => {
      for (const [j, w] of workers.entries()) w.postMessage(jobOptions(o, j, n, d.device.info.size));
      return mergeJobs(await Promise.all(results));
    },
    close: stop,
  };
}
