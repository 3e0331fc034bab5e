/**
 * blkbench's command line: the yargs definition, size parsing, and the
 * checks that turn a bad option into one clear line instead of a stack
 * trace. `parseOptions` never prints and never exits, so the binary and
 * the tests share it.
 */
import { createRequire } from 'node:module';

// yargs's CommonJS build: its help text wraps at word boundaries (wrap-ansi), where the ESM build cuts words in two.
const yargs = createRequire(import.meta.url)('yargs') as typeof import('yargs').default;

export const RW_MODES = ['read', 'write', 'randread', 'randwrite', 'randrw'] as const;
export type RwMode = (typeof RW_MODES)[number];

/** Where the I/O goes. */
export type BenchTarget =
  /** The embedded simulated host serving a temporary image file (removed afterwards). */
  | { kind: 'temp'; size: number; dir: string | undefined }
  /** The embedded simulated host serving this image file (created with `size` bytes if missing). */
  | { kind: 'image'; path: string; size: number | undefined }
  /** The embedded simulated host serving memory. */
  | { kind: 'ramdisk'; size: number }
  /** A real Xen guest's virtual disk. */
  | { kind: 'xen'; vdev: string };

export interface BenchOptions {
  rw: RwMode;
  /** Percentage of reads in randrw. */
  rwmixread: number;
  /** Bytes per I/O. */
  bs: number;
  iodepth: number;
  queues: number;
  /** Jobs, each on a worker thread with a queue of its own (fio's numjobs); 1: the device runs on this thread. */
  numjobs: number;
  /** Bytes of the region the workload covers (undefined: from `offset` to the end of the disk). */
  size: number | undefined;
  /** Seconds to run for (time-based, wrapping over the region); undefined: until `numberIos`, or one pass over the region. */
  runtime: number | undefined;
  /** Stop after this many I/Os. */
  numberIos: number | undefined;
  /** Seconds of warm-up not counted in the figures. */
  rampTime: number;
  /** Byte offset where the region starts. */
  offset: number;
  seed: number;
  target: BenchTarget;
  persistent: boolean;
  indirect: boolean;
  pool: boolean;
  ringPages: number;
  /** I/O on device buffers (granted in place) rather than ordinary memory bounced through the pool. */
  zeroCopy: boolean;
  /** Busy-poll the response ring this many microseconds after each push (0: off). */
  pollUs: number;
  /** With --xen: how event-channel wake-ups reach the process. */
  wakeup: 'event-loop' | 'thread';
  verify: boolean;
  baseline: boolean;
  json: boolean;
  /** Progress line on stderr: undefined means "when stderr is a terminal". */
  progress: boolean | undefined;
  /** Time I/Os (false: fio's gtod_reduce, no clock read per I/O and no latency figures). */
  latency: boolean;
  /** Time one I/O in this many (undefined: chosen from what a clock read costs here, measured at start). */
  latEvery: number | undefined;
  /** Write a V8 CPU profile of the driver's measured phase (warm-up left out) here. */
  cpuProfile: string | undefined;
  /** Write an SVG chart of the run (rate per second, latency percentiles) here. */
  plot: string | undefined;
}

/** A bad command line; the message is one line, fit to print as it is. */
export class UsageError extends Error {
  override readonly name = 'UsageError';
}

export type ParseResult =
  | { kind: 'run'; options: BenchOptions }
  /** --help or --version: print `text` and exit 0. */
  | { kind: 'text'; text: string };

const UNITS: Record<string, number> = { '': 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3, t: 1024 ** 4 };

/**
 * A size as fio writes them: a byte count with an optional binary unit
 * (k, m, g, t; "KiB", "KB" and "K" all mean 1024). Throws UsageError.
 */
export function parseSize(what: string, text: string | number): number {
  const s = String(text).trim().toLowerCase();
  const m = /^(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?$/.exec(s);
  if (m === null) throw new UsageError(`${what}: "${text}" is not a size (examples: 4096, 4k, 64KiB, 1m, 2g)`);
  const bytes = Number(m[1]) * UNITS[m[2]!]!;
  if (!Number.isSafeInteger(bytes)) throw new UsageError(`${what}: "${text}" is not a whole number of bytes`);
  return bytes;
}

const EXAMPLES: Array<[string, string]> = [
  ['blkbench', '4 KiB random reads, 32 in flight, for 5 s on the embedded simulated host'],
  ['blkbench --rw randwrite --bs 4k --iodepth 32 --runtime 10 --baseline', 'random writes, and the same pattern on the image with Node fs'],
  ['blkbench --rw read --bs 1m --size 256m --iodepth 8', 'one sequential pass in 1 MiB reads (indirect descriptors)'],
  ['blkbench --rw randrw --rwmixread 70 --verify --ramdisk 128m', 'mixed I/O on a memory disk, checking every block read'],
  ['blkbench --no-persistent --no-pool --json', 'what persistent grants and the pool buy, as JSON'],
  ['blkbench --rw read --bs 1m --zero-copy --baseline', 'large reads into device buffers (no bounce copy) against Node fs'],
  ['blkbench --xen --vdev 51728 --rw randread --runtime 30', "a real Xen guest's second disk (xvdb)"],
  ['blkbench --numjobs 2 --iodepth 16', 'two threads, each with its own queue and 16 I/Os in flight'],
];

function build(args: string[]) {
  let y = yargs(args)
    .scriptName('blkbench')
    .usage(
      '$0 [options]\n\nA fio-like block I/O benchmark for the xen-blkfront driver. It reports IOPS, bandwidth, latency, ' +
        'CPU use, and what the driver did: grant pool hits, backend map operations, notifications per request.',
    )
    .strict()
    .version(false)
    .help('help')
    .alias('help', 'h')
    .wrap(Math.min(100, process.stdout.columns ?? 100))
    .group(
      ['rw', 'rwmixread', 'bs', 'iodepth', 'queues', 'numjobs', 'size', 'runtime', 'number-ios', 'ramp-time', 'offset', 'seed'],
      'Workload:',
    )
    // yargs types the option from its default: without the assertion `rw` would be a plain string.
    // eslint-disable-next-line @typescript-eslint/no-unnecessary-type-assertion
    .option('rw', { requiresArg: true, choices: RW_MODES, default: 'randread' as RwMode, describe: 'Access pattern' })
    .option('rwmixread', { requiresArg: true, type: 'number', default: 50, describe: 'randrw: percentage of reads (0-100)' })
    .option('bs', {
      requiresArg: true,
      type: 'string',
      default: '4k',
      describe: 'Bytes per I/O, a multiple of the sector size (4k, 64k, 1m)',
    })
    .option('iodepth', { requiresArg: true, type: 'number', default: 32, describe: 'I/Os kept in flight' })
    .option('queues', {
      requiresArg: true,
      type: 'number',
      describe: 'Ring queues to ask the backend for (default 2; with --numjobs, one per job)',
    })
    .option('numjobs', {
      requiresArg: true,
      type: 'number',
      default: 1,
      describe: 'Jobs, each on a worker thread of its own with its own queue (ring, event channel, pool) and --iodepth I/Os in flight',
    })
    .option('size', {
      requiresArg: true,
      type: 'string',
      describe: 'Bytes of disk the I/O covers from --offset (default: the rest of the disk; the temporary image is this big, 64m if unset)',
    })
    .option('runtime', {
      requiresArg: true,
      type: 'number',
      describe: 'Seconds to run, wrapping over the region (default: one pass when --size or --number-ios is given, else 5 s)',
    })
    .option('number-ios', { requiresArg: true, type: 'number', describe: 'Stop after this many I/Os' })
    .option('ramp-time', { requiresArg: true, type: 'number', default: 0, describe: 'Seconds of warm-up left out of the figures' })
    .option('offset', { requiresArg: true, type: 'string', default: '0', describe: 'Byte offset where the region starts' })
    .option('seed', { requiresArg: true, type: 'number', default: 1, describe: 'Seed of the random offsets (same seed, same sequence)' })
    .group(['image', 'ramdisk', 'tmpdir', 'xen', 'vdev'], 'Target (default: the embedded simulated host with a temporary image):')
    .option('image', {
      requiresArg: true,
      type: 'string',
      describe: 'Image file the simulated backend serves (created with --size if missing)',
    })
    .option('ramdisk', { requiresArg: true, type: 'string', describe: 'Serve a memory disk of this size instead' })
    .option('tmpdir', {
      requiresArg: true,
      type: 'string',
      describe: 'Directory for the temporary image (default: /dev/shm when there, else the system temp dir)',
    })
    .option('xen', { type: 'boolean', default: false, describe: 'Use the real Xen this guest runs on (/dev/xen)' })
    .option('vdev', {
      requiresArg: true,
      type: 'string',
      describe: 'With --xen: the virtual device (number under device/vbd, e.g. 51712 for xvda)',
    })
    .group(
      ['persistent', 'indirect', 'pool', 'ring-pages', 'zero-copy', 'poll-us', 'wakeup'],
      'Driver (turn a mechanism off to see what it buys):',
    )
    .option('persistent', {
      type: 'boolean',
      default: true,
      describe: 'Persistent grants (--no-persistent: the backend maps every segment per request)',
    })
    .option('indirect', {
      type: 'boolean',
      default: true,
      describe: 'Indirect descriptors (--no-indirect: at most 11 pages per ring request)',
    })
    .option('pool', {
      type: 'boolean',
      default: true,
      describe: 'Per-queue grant pool (--no-pool: a fresh grant per segment, ended on completion)',
    })
    .option('ring-pages', {
      requiresArg: true,
      type: 'number',
      default: 4,
      describe: 'Pages per ring, a power of two (capped by the backend)',
    })
    .option('zero-copy', {
      type: 'boolean',
      default: false,
      describe:
        'I/O on device buffers (allocBuffer(): granted once, used in place) instead of ordinary memory bounced through the grant pool',
    })
    .option('poll-us', {
      requiresArg: true,
      type: 'number',
      default: 0,
      describe:
        'Busy-poll the response ring up to this many µs after sending, before sleeping on the event channel (0: off; burns CPU, for few I/Os in flight)',
    })
    .option('wakeup', {
      choices: ['event-loop', 'thread'] as const,
      default: 'event-loop' as const,
      describe: "With --xen: event-channel wake-ups on the event loop's own epoll, or through a poll on a worker thread",
    })
    .group(['verify', 'baseline', 'json', 'progress', 'latency', 'lat-every', 'plot', 'cpu-profile'], 'Checks and output:')
    .option('verify', {
      type: 'boolean',
      default: false,
      describe: 'Write a pattern encoding offset and generation, check every read, read it all back at the end; fails on a mismatch',
    })
    .option('baseline', {
      type: 'boolean',
      default: false,
      describe: 'Run the same pattern on the image file with Node fs in this process and report driver/baseline ratios',
    })
    .option('json', { type: 'boolean', default: false, describe: 'Print one JSON object instead of the summary' })
    .option('progress', { type: 'boolean', describe: 'Progress line on stderr (default: when stderr is a terminal)' })
    .option('latency', {
      type: 'boolean',
      default: true,
      describe: "Time I/Os (--no-latency: no clock read at all and no latency figures, like fio's gtod_reduce)",
    })
    .option('lat-every', {
      requiresArg: true,
      type: 'number',
      describe:
        'Time one I/O in N (default: every I/O where a clock read is cheap; where it is a system call, as on a Xen PV guest, a sample sized from its cost, measured at start)',
    })
    .option('plot', {
      requiresArg: true,
      type: 'string',
      describe: 'Write one self-contained SVG: the rate in each second and the latency percentiles, the driver beside its baseline',
    })
    .option('cpu-profile', {
      requiresArg: true,
      type: 'string',
      describe: "Write a V8 CPU profile (.cpuprofile) of the driver's measured phase, warm-up left out, to this file",
    });
  for (const [cmd, what] of EXAMPLES) y = y.example(cmd, what);
  return y.epilogue(
    'Sizes take binary units: 4k = 4096, 1m = 1048576. Exit status: 0 done, 1 failed (or verify found mismatches), 2 bad options.',
  );
}

type Raw = Awaited<ReturnType<ReturnType<typeof build>['parseAsync']>>;

function intIn(what: string, v: number | undefined, lo: number, hi: number): number {
  if (v === undefined || !Number.isInteger(v) || v < lo || v > hi)
    throw new UsageError(`--${what}: expected a whole number from ${lo} to ${hi}, got ${v}`);
  return v;
}

function positive(what: string, v: number | undefined): number | undefined {
  if (v === undefined) return undefined;
  if (!Number.isFinite(v) || v <= 0) throw new UsageError(`--${what}: expected a positive number, got ${v}`);
  return v;
}

function check(a: Raw): BenchOptions {
  const bs = parseSize('--bs', a.bs);
  if (bs === 0 || bs % 512 !== 0) throw new UsageError(`--bs: ${bs} is not a positive multiple of 512`);
  const offset = parseSize('--offset', a.offset);
  if (offset % 512 !== 0) throw new UsageError(`--offset: ${offset} is not a multiple of 512`);
  const size = a.size === undefined ? undefined : parseSize('--size', a.size);
  if (size !== undefined && size < bs) throw new UsageError(`--size: ${size} is smaller than one block (--bs ${bs})`);
  const ringPages = intIn('ring-pages', a['ring-pages'], 1, 16);
  if ((ringPages & (ringPages - 1)) !== 0) throw new UsageError(`--ring-pages: ${ringPages} is not a power of two`);
  const chosen = [a.image !== undefined && '--image', a.ramdisk !== undefined && '--ramdisk', a.xen && '--xen'].filter(Boolean);
  if (chosen.length > 1) throw new UsageError(`${chosen.join(' and ')} name different targets: choose one`);
  if (a.vdev !== undefined && !a.xen) throw new UsageError('--vdev only goes with --xen');
  let target: BenchTarget;
  if (a.xen) {
    if (a.vdev === undefined) throw new UsageError('--xen needs --vdev (the virtual device, e.g. 51712 for xvda)');
    if (!/^\d+$/.test(a.vdev)) throw new UsageError(`--vdev: "${a.vdev}" is not a device number`);
    target = { kind: 'xen', vdev: a.vdev };
  } else if (a.ramdisk !== undefined) {
    const rsize = parseSize('--ramdisk', a.ramdisk);
    if (rsize === 0 || rsize % 4096 !== 0) throw new UsageError(`--ramdisk: ${rsize} is not a positive multiple of 4096`);
    target = { kind: 'ramdisk', size: rsize };
  } else if (a.image !== undefined) {
    target = { kind: 'image', path: a.image, size: size === undefined ? undefined : offset + size };
  } else {
    const tsize = offset + (size ?? 64 << 20);
    target = { kind: 'temp', size: Math.ceil(tsize / 4096) * 4096, dir: a.tmpdir };
  }
  if (a.tmpdir !== undefined && target.kind !== 'temp') throw new UsageError('--tmpdir only applies to the temporary image');
  if (a.baseline && (target.kind === 'ramdisk' || target.kind === 'xen')) {
    throw new UsageError('--baseline runs on an image file: use the default temporary image or --image');
  }
  const numjobs = intIn('numjobs', a.numjobs, 1, 16);
  if (numjobs > 1) {
    if (a.queues !== undefined && a.queues !== numjobs)
      throw new UsageError(`--numjobs ${numjobs} runs one queue per job: --queues must be ${numjobs} or left out`);
    if (a['cpu-profile'] !== undefined)
      throw new UsageError('--cpu-profile profiles the main thread, and with --numjobs the jobs run on their own threads');
  }
  return {
    rw: a.rw,
    rwmixread: intIn('rwmixread', a.rwmixread, 0, 100),
    bs,
    iodepth: intIn('iodepth', a.iodepth, 1, 4096),
    queues: numjobs > 1 ? numjobs : intIn('queues', a.queues ?? 2, 1, 16),
    numjobs,
    size,
    runtime: positive('runtime', a.runtime) ?? (size === undefined && a['number-ios'] === undefined ? 5 : undefined),
    numberIos: a['number-ios'] === undefined ? undefined : intIn('number-ios', a['number-ios'], 1, Number.MAX_SAFE_INTEGER),
    rampTime: a['ramp-time'] === 0 ? 0 : positive('ramp-time', a['ramp-time'])!,
    offset,
    seed: intIn('seed', a.seed, 0, 0xffffffff),
    target,
    persistent: a.persistent,
    indirect: a.indirect,
    pool: a.pool,
    ringPages,
    zeroCopy: a['zero-copy'],
    pollUs: intIn('poll-us', a['poll-us'], 0, 1_000_000),
    wakeup: a.wakeup,
    verify: a.verify,
    baseline: a.baseline,
    json: a.json,
    progress: a.progress,
    latency: a.latency,
    latEvery: a['lat-every'] === undefined ? undefined : intIn('lat-every', a['lat-every'], 1, 1 << 20),
    cpuProfile: a['cpu-profile'],
    plot: a.plot,
  };
}

/** yargs writes some messages over several lines ("Invalid values:\n  Argument: …"). */
function oneLine(msg: string): string {
  return msg
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l !== '')
    .join(' ');
}

/**
 * Parses blkbench's arguments (without the node and script names).
 * Throws UsageError with a one-line message for anything wrong.
 */
export async function parseOptions(args: string[]): Promise<ParseResult> {
  let output = '';
  let failure: string | null = null;
  const y = build(args)
    .exitProcess(false)
    .fail((msg, err) => {
      failure = msg ?? err?.message ?? 'bad options';
    });
  let raw: Raw;
  try {
    raw = await y.parseAsync(args, {}, (_err, _argv, out) => {
      output = out;
    });
  } catch (err) {
    throw new UsageError(oneLine(failure ?? (err instanceof Error ? err.message : String(err))));
  }
  if (failure !== null) throw new UsageError(oneLine(failure));
  if (raw.help === true || output !== '') return { kind: 'text', text: output };
  return { kind: 'run', options: check(raw) };
}
