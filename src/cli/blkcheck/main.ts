/**
 * blkcheck's main: options in, the checks run in order on one vbd, a table
 * (or --json) out, exit 1 when a check fails. Every check writes, so a
 * real vbd or an image file is used only when the caller says it is
 * scratch (--scratch); the hostile checks ask for it too.
 */
import yargs from 'yargs';
import { openXenPlatform } from '../../platform/xen.js';
import type { XenPlatform } from '../../platform/types.js';
import { createSimHost, type SimBlkback, type SimDiskOptions, type SimHost } from '../../sim/index.js';
import { locateDevice } from '../../blkfront/negotiate.js';
import { openBlockDevice } from '../../blkfront/device.js';
import { parseSize } from '../blkbench/options.js';
import { CHECKS, type Check, type CheckContext, type Group, type Result } from './checks.js';
import { HOSTILE, layGuard } from './hostile.js';
import type { Output } from '../common/bin.js';

export interface Row {
  id: string;
  group: Group;
  rule: string;
  result: Result;
  detail: string;
  ms: number;
}

export interface CheckReport {
  target: string;
  backend: string;
  hostile: boolean;
  rows: Row[];
  counts: Record<Result, number>;
}

/** The smallest disk the checks fit in: they write at fixed places up to 56 MiB in. */
export const MIN_DISK = 64 << 20;

export type Target =
  { kind: 'xen'; vdev: string; other: string | null } | { kind: 'image'; path: string } | { kind: 'ramdisk'; size: number };

export interface Options {
  target: Target;
  /** More for the simulated blkback (tests give it faults and odd keys). */
  sim?: SimDiskOptions;
  hostile: boolean;
  json: boolean;
  only: string[] | null;
  timeoutMs: number;
}

class UsageError extends Error {}

function parse(args: string[]): Promise<Options | string> {
  let failure: string | null = null;
  let text = '';
  const y = yargs(args)
    .scriptName('blkcheck')
    .usage(
      '$0 [options]\n\nChecks a Xen block backend from the guest: what it offers against blkif.h, whether it serves every ' +
        'request the protocol allows (data written and read back), and with --hostile what it does with requests the ' +
        'protocol forbids. One row per check: pass, fail, not offered, or skipped with the reason. Every check writes: ' +
        'give --scratch for a disk it may destroy.',
    )
    .option('xen', { type: 'boolean', default: false, describe: 'Check a vbd of the Xen guest this runs in (with --vdev)' })
    .option('vdev', { type: 'string', requiresArg: true, describe: 'The vbd to check (its key under device/vbd/, e.g. 51728)' })
    .option('other-vdev', { type: 'string', requiresArg: true, describe: 'Another vbd of the same backend, read to see it keeps serving' })
    .option('image', { type: 'string', requiresArg: true, describe: 'Check the simulated blkback serving this image file' })
    .option('ramdisk', {
      type: 'string',
      requiresArg: true,
      describe: 'Check the simulated blkback serving memory of this size (default 64m)',
    })
    .option('scratch', { type: 'boolean', default: false, describe: 'The disk may be overwritten (required with --xen and --image)' })
    .option('hostile', {
      type: 'boolean',
      default: false,
      describe: 'Also send requests the protocol forbids (needs --scratch on a real vbd)',
    })
    .option('only', { type: 'string', requiresArg: true, describe: 'Run only these checks (ids, comma-separated)' })
    .option('timeout', { type: 'number', requiresArg: true, default: 10, describe: 'Seconds for each step of a connect' })
    .option('json', { type: 'boolean', default: false, describe: 'One JSON object instead of the table' })
    .example('blkcheck', 'every check but the hostile ones, on the embedded simulated blkback')
    .example('blkcheck --hostile', 'the hostile ones too')
    .example('blkcheck --xen --vdev 51728 --scratch --hostile', "a real backend's vbd that may be destroyed")
    .strict()
    .exitProcess(false)
    .fail((msg, err) => {
      failure = msg ?? err?.message ?? 'bad options';
    })
    .help();
  return y
    .parseAsync(args, {}, (_e, _a, out) => {
      text = out;
    })
    .then(
      (a) => {
        if (failure !== null) throw new UsageError(failure);
        if (text !== '') return text;
        const given = [a.xen, a.image !== undefined, a.ramdisk !== undefined].filter(Boolean).length;
        if (given > 1) throw new UsageError('--xen, --image and --ramdisk are alternatives');
        let target: Target;
        if (a.xen) {
          if (a.vdev === undefined) throw new UsageError('--xen needs --vdev');
          if (!a.scratch) throw new UsageError('every check writes: give --scratch to say the vbd may be overwritten');
          target = { kind: 'xen', vdev: a.vdev, other: a['other-vdev'] ?? null };
        } else if (a.image !== undefined) {
          if (!a.scratch) throw new UsageError('every check writes: give --scratch to say the image may be overwritten');
          target = { kind: 'image', path: a.image };
        } else {
          const size = a.ramdisk === undefined ? MIN_DISK : parseSize('--ramdisk', a.ramdisk);
          target = { kind: 'ramdisk', size };
        }
        if (a.vdev !== undefined && !a.xen) throw new UsageError('--vdev only applies with --xen');
        if (!(a.timeout > 0)) throw new UsageError('--timeout must be positive');
        return {
          target,
          hostile: a.hostile,
          json: a.json,
          only: a.only === undefined ? null : a.only.split(','),
          timeoutMs: a.timeout * 1000,
        };
      },
      (err: unknown) => {
        throw new UsageError(failure ?? (err instanceof Error ? err.message : String(err)));
      },
    );
}

/** Reads every key of the backend's directory. */
async function readKeys(platform: XenPlatform, backend: string, into: Map<string, string>): Promise<void> {
  for (const k of await platform.xenstore.directory(backend)) {
    const v = await platform.xenstore.readOptional(`${backend}/${k}`);
    if (v !== undefined) into.set(k, v);
  }
}

/** Runs the checks on the target; the report. */
export interface RunHooks {
  /** Each check's row as it finishes. */
  progress?(row: Row): void;
  /** The simulated backend under check, once it is plugged in. */
  disk?(disk: SimBlkback): void;
}

export async function runChecks(o: Options, hooks: RunHooks = {}): Promise<CheckReport> {
  let host: SimHost | null = null;
  let platform: XenPlatform;
  let vdev: number | string;
  let other: number | string | null = null;
  let resize: CheckContext['resize'] = null;
  let target: string;
  if (o.target.kind === 'xen') {
    platform = await openXenPlatform();
    vdev = o.target.vdev;
    other = o.target.other;
    target = `Xen vbd ${vdev}`;
  } else {
    host = await createSimHost({ guestName: 'blkcheck' });
    const disk = await host.addDisk({ ...(o.target.kind === 'image' ? { image: o.target.path } : { size: o.target.size }), ...o.sim });
    hooks.disk?.(disk);
    other = (await host.addDisk({ size: 1 << 20, vdev: disk.vdev + 16 })).vdev;
    platform = host.guest;
    vdev = disk.vdev;
    resize = (bytes) => disk.resize(bytes);
    target = o.target.kind === 'image' ? `simulated blkback, image ${o.target.path}` : 'simulated blkback, memory disk';
  }
  try {
    const loc = await locateDevice(platform, vdev);
    const keys = new Map<string, string>();
    // What it offers while it waits for a frontend, then what it adds once connected.
    await readKeys(platform, loc.backend, keys);
    let connectError: string | null = null;
    const probe = await openBlockDevice({ platform, vdev, timeoutMs: o.timeoutMs }).catch((err: unknown) => {
      connectError = err instanceof Error ? `${(err as { code?: string }).code ?? 'error'}: ${err.message}` : String(err);
      return null;
    });
    // What it added once connected (still there after a failed connect, for the checks to judge).
    await readKeys(platform, loc.backend, keys);
    if (probe !== null) {
      try {
        if (probe.info.size < MIN_DISK) throw new Error(`the disk has ${probe.info.size} bytes; the checks need ${MIN_DISK}`);
        if (probe.readOnly) throw new Error('the disk is read-only; the checks write');
      } finally {
        await probe.close();
      }
    }
    const ctx: CheckContext = {
      platform,
      vdev,
      other,
      backend: loc.backend,
      keys,
      resize,
      connectError,
      queueWorker: workerUrl(),
      timeoutMs: o.timeoutMs,
    };
    const all: Check[] = [...CHECKS, ...(o.hostile ? HOSTILE : [])];
    const chosen = o.only === null ? all : all.filter((c) => o.only!.includes(c.id));
    const rows: Row[] = [];
    let guarded = false;
    for (const c of chosen) {
      if (c.group === 'robustness' && !guarded) {
        await layGuard(ctx);
        guarded = true;
      }
      const t0 = performance.now();
      let v;
      try {
        v = await c.run(ctx);
      } catch (err) {
        v = {
          result: 'fail' as const,
          detail: err instanceof Error ? `${(err as { code?: string }).code ?? 'error'}: ${err.message}` : String(err),
        };
      }
      const row = { id: c.id, group: c.group, rule: c.rule, result: v.result, detail: v.detail, ms: Math.round(performance.now() - t0) };
      rows.push(row);
      hooks.progress?.(row);
    }
    const counts: Record<Result, number> = { pass: 0, fail: 0, 'not offered': 0, skipped: 0 };
    for (const r of rows) counts[r.result]++;
    return { target, backend: loc.backend, hostile: o.hostile, rows, counts };
  } finally {
    if (host !== null) await host.close();
    else await platform.close();
  }
}

/** The every-queue check's worker (under a TypeScript loader, the build's JS). */
function workerUrl(): URL {
  return import.meta.url.endsWith('.ts')
    ? new URL('../../../dist/src/cli/blkcheck/queue_worker.js', import.meta.url)
    : new URL('./queue_worker.js', import.meta.url);
}

/** The table: one row per check, its rule beneath. */
export function table(r: CheckReport): string {
  const lines = [`blkcheck: ${r.target}, backend ${r.backend}${r.hostile ? ', hostile checks included' : ''}`];
  let group: string | null = null;
  for (const row of r.rows) {
    if (row.group !== group) {
      group = row.group;
      lines.push('', group);
    }
    lines.push(`  ${row.result.padEnd(12)} ${row.id.padEnd(26)} ${row.detail}`, `  ${''.padEnd(12)} ${''.padEnd(26)} ${row.rule}`);
  }
  const c = r.counts;
  lines.push('', `${c.pass} passed, ${c.fail} failed, ${c['not offered']} not offered, ${c.skipped} skipped`);
  return `${lines.join('\n')}\n`;
}

export async function main(args: string[], out: Output = process.stdout, err: Output = process.stderr): Promise<number> {
  let o: Options | string;
  try {
    o = await parse(args);
  } catch (e) {
    if (e instanceof UsageError) {
      err.write(`blkcheck: ${e.message.split('\n').join(' ')}\nTry 'blkcheck --help'.\n`);
      return 2;
    }
    throw e;
  }
  if (typeof o === 'string') {
    out.write(o.endsWith('\n') ? o : `${o}\n`);
    return 0;
  }
  const opts = o;
  try {
    // Progress on a terminal only: the table says it all at the end.
    const tty = (err as { isTTY?: boolean }).isTTY === true;
    const report = await runChecks(opts, {
      progress: opts.json || !tty ? undefined : (row) => err.write(`blkcheck: ${row.id}: ${row.result} (${row.ms} ms)\n`),
    });
    out.write(opts.json ? `${JSON.stringify(report)}\n` : table(report));
    return report.counts.fail > 0 ? 1 : 0;
  } catch (e) {
    const code = typeof (e as { code?: unknown }).code === 'string' ? `${(e as { code: string }).code}: ` : '';
    err.write(`blkcheck: ${code}${e instanceof Error ? e.message : String(e)}\n`);
    return 1;
  }
}
