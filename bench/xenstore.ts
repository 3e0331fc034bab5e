/**
 * Xenstore client throughput: the same work done strictly one request at a
 * time and with 64 in flight, against the simulated xenstored running as a
 * daemon in another process over a Unix socket. Prints one JSON line.
 *
 *   npm run bench:xenstore [-- --ops N --in-flight K]
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

const { values } = parseArgs({
  options: { ops: { type: 'string', default: '20000' }, 'in-flight': { type: 'string', default: '64' } },
});
const OPS = Number(values.ops);
const IN_FLIGHT = Number(values['in-flight']);
const TARGET_RATIO = 5;

async function startDaemon(): Promise<{ socket: string; stop(): void }> {
  const dir = mkdtempSync(join(tmpdir(), 'xsbench-'));
  const socket = join(dir, 'socket');
  const cli = fileURLToPath(new URL('../src/sim/cli.js', import.meta.url));
  const proc = spawn(process.execPath, [cli, 'xenstored', '--socket', socket], { stdio: ['ignore', 'pipe', 'inherit'] });
  await new Promise<void>((resolve, reject) => {
    proc.stdout!.on('data', (d: Buffer) => d.toString().includes('listening') && resolve());
    proc.once('exit', (c) => reject(new Error(`daemon exited with ${c}`)));
  });
  return {
    socket,
    stop: () => {
      proc.kill('SIGTERM');
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

type Op = (i: number) => Promise<unknown>;

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

async function main(): Promise<void> {
  const daemon = await startDaemon();
  try {
    const xs = new XenstoreClient(await connectUnixSocket(daemon.socket));
    const large = 'L'.repeat(2000);
    await xs.write('/bench/small', 's');
    const cases: Record<string, Op> = {
      read_1b: () => xs.read('/bench/small'),
      write_2000b: (i) => xs.write(`/bench/large/${i % 256}`, large),
    };
    const out: Record<string, { serial_ops_per_s: number; concurrent_ops_per_s: number; ratio: number }> = {};
    for (const [name, op] of Object.entries(cases)) {
      // Warm up both paths (JIT, socket buffers, the daemon's tree).
      await serial(op, Math.min(2000, OPS));
      await concurrent(op, Math.min(2000, OPS), IN_FLIGHT);
      const s = OPS / (await serial(op, OPS));
      const c = OPS / (await concurrent(op, OPS, IN_FLIGHT));
      out[name] = { serial_ops_per_s: Math.round(s), concurrent_ops_per_s: Math.round(c), ratio: Number((c / s).toFixed(2)) };
    }
    const met = Object.values(out).every((c) => c.ratio >= TARGET_RATIO);
    process.stdout.write(`${JSON.stringify({ bench: 'xenstore', ops: OPS, in_flight: IN_FLIGHT, cases: out, target_ratio: TARGET_RATIO, met })}\n`);
    xs.close();
  } finally {
    daemon.stop();
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`bench:xenstore: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
