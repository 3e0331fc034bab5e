/**
 * Xenstore client throughput: the same work done strictly one request at a
 * time and with 64 in flight, by default against the simulated xenstored
 * running as a daemon in another process over a Unix socket. Prints one JSON
 * line.
 *
 *   npm run bench:xenstore [-- --ops N --in-flight K]
 *   node dist/bench/xenstore.js --socket /run/xenstored/socket --base /bench   (a real daemon, from dom0)
 *     [--summary: one line for people instead of the JSON]
 *   node dist/bench/xenstore.js --xenbus /dev/xen/xenbus --files 4 --base data/xsbench   (from a guest)
 *
 * Through /dev/xen/xenbus each open file carries one request at a time (the
 * kernel's xenbus_file_write keeps one message per file), so --files bounds
 * what is in flight there.
 *
 * The target (a ratio of at least 5) is what the Linux xenbus rewrite that
 * allowed concurrent requests reached; the ratio, not the absolute rate, is
 * the figure, since both runs share the machine and the process.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { XenstoreClient } from '../src/xenbus/client.js';
import { connectUnixSocket } from '../src/transport/socket.js';
import { openXenbusDevice } from '../src/transport/xenbus_device.js';
import { statCpuSeconds } from '../src/cli/blkbench/run.js';
import type { MessageStream } from '../src/transport/message_stream.js';
import type { ByteStream } from '../src/transport/byte_stream.js';

const { values } = parseArgs({
  options: {
    ops: { type: 'string', default: '20000' },
    'in-flight': { type: 'string', default: '64' },
    socket: { type: 'string' },
    xenbus: { type: 'string' },
    files: { type: 'string', default: '3' },
    base: { type: 'string', default: '/bench' },
    summary: { type: 'boolean', default: false },
  },
});
const OPS = Number(values.ops);
const IN_FLIGHT = Number(values['in-flight']);
const TARGET_RATIO = 5;

async function startDaemon(): Promise<{ socket: string; pid: number; stop(): void }> {
  const dir = mkdtempSync(join(tmpdir(), 'xsbench-'));
  const socket = join(dir, 'socket');
  const cli = fileURLToPath(new URL('../src/cli/xensim.js', import.meta.url));
  const proc = spawn(process.execPath, [cli, 'xenstored', '--socket', socket], { stdio: ['ignore', 'pipe', 'inherit'] });
  await new Promise<void>((resolve, reject) => {
    proc.stdout.on('data', (d: Buffer) => d.toString().includes('listening') && resolve());
    proc.once('exit', (c) => reject(new Error(`daemon exited with ${c}`)));
  });
  return {
    socket,
    pid: proc.pid!,
    stop: () => {
      proc.kill('SIGTERM');
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

type Op = (i: number) => Promise<unknown>;

/** Runs `phase` and says how much CPU this process and the daemon spent on each operation, in µs. */
async function measured(
  pid: number | undefined,
  n: number,
  phase: () => Promise<number>,
): Promise<{ seconds: number; client: number; daemon: number | null }> {
  const c0 = process.cpuUsage();
  const d0 = pid === undefined ? null : statCpuSeconds(`/proc/${pid}/stat`);
  const seconds = await phase();
  const c = process.cpuUsage(c0);
  const d1 = pid === undefined ? null : statCpuSeconds(`/proc/${pid}/stat`);
  return {
    seconds,
    client: Math.round(((c.user + c.system) / n) * 10) / 10,
    daemon: d0 === null || d1 === null ? null : Math.round((((d1 - d0) * 1e6) / n) * 10) / 10,
  };
}

async function serial(op: Op, n: number): Promise<number> {
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < n; i++) await op(i);
  return Number(process.hrtime.bigint() - t0) / 1e9;
}

async function concurrent(op: Op, n: number, k: number): Promise<number> {
  const t0 = process.hrtime.bigint();
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < n) await op(next++);
  };
  await Promise.all(Array.from({ length: k }, worker));
  return Number(process.hrtime.bigint() - t0) / 1e9;
}

/** The transport the options name, and how to let go of what was started for it. */
async function connect(): Promise<{ stream: ByteStream | MessageStream; target: string; daemonPid?: number; stop(): void }> {
  if (values.xenbus !== undefined) {
    const files = Number(values.files);
    return { stream: await openXenbusDevice(values.xenbus, { files }), target: `${values.xenbus} (${files} files)`, stop: () => undefined };
  }
  if (values.socket !== undefined) return { stream: await connectUnixSocket(values.socket), target: values.socket, stop: () => undefined };
  const daemon = await startDaemon();
  return {
    stream: await connectUnixSocket(daemon.socket),
    target: 'the simulated xenstored',
    daemonPid: daemon.pid,
    stop: () => daemon.stop(),
  };
}

async function main(): Promise<void> {
  const c = await connect();
  try {
    const xs = new XenstoreClient(c.stream);
    const base = values.base;
    const large = 'L'.repeat(2000);
    await xs.write(`${base}/small`, 's');
    const cases: Record<string, Op> = {
      read_1b: () => xs.read(`${base}/small`),
      write_2000b: (i) => xs.write(`${base}/large/${i % 256}`, large),
    };
    const out: Record<
      string,
      {
        serial_ops_per_s: number;
        concurrent_ops_per_s: number;
        ratio: number;
        /** CPU per operation, µs: this client's and (the simulated daemon only) the daemon's, one at a time and concurrent. */
        cpu_us_per_op: { serial: { client: number; daemon: number | null }; concurrent: { client: number; daemon: number | null } };
      }
    > = {};
    for (const [name, op] of Object.entries(cases)) {
      // Warm up both paths (JIT, socket buffers, the daemon's tree).
      await serial(op, Math.min(2000, OPS));
      await concurrent(op, Math.min(2000, OPS), IN_FLIGHT);
      const sm = await measured(c.daemonPid, OPS, () => serial(op, OPS));
      const km = await measured(c.daemonPid, OPS, () => concurrent(op, OPS, IN_FLIGHT));
      const s = OPS / sm.seconds;
      const k = OPS / km.seconds;
      out[name] = {
        serial_ops_per_s: Math.round(s),
        concurrent_ops_per_s: Math.round(k),
        ratio: Number((k / s).toFixed(2)),
        cpu_us_per_op: { serial: { client: sm.client, daemon: sm.daemon }, concurrent: { client: km.client, daemon: km.daemon } },
      };
    }
    await xs.rm(base);
    const met = Object.values(out).every((r) => r.ratio >= TARGET_RATIO);
    if (values.summary) {
      // One line for people (the Xen testbed's dom0 prints it): each case's rates and ratio.
      process.stdout.write(
        `${Object.entries(out)
          .map(([name, r]) => `${name} ${r.serial_ops_per_s} -> ${r.concurrent_ops_per_s} ops/s, ratio ${r.ratio.toFixed(2)}`)
          .join('; ')}\n`,
      );
    } else {
      process.stdout.write(
        `${JSON.stringify({ bench: 'xenstore', target: c.target, ops: OPS, in_flight: IN_FLIGHT, cases: out, target_ratio: TARGET_RATIO, met })}\n`,
      );
    }
    xs.close();
  } finally {
    c.stop();
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`bench:xenstore: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
