import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { tempSocketPath } from './xs.js';

const root = fileURLToPath(new URL('../../', import.meta.url));
export const XENSIM = `${root}dist/src/cli/xensim.js`;

/** Built output of the simulated host, for worker threads (which load JS, not TS; test/helpers/build.ts builds it first). */
export const SIM_DIST = `${root}dist/src/sim/index.js`;

/** Starts `xensim xenstored` in its own process and waits for its listening line. */
export async function spawnXenstored(): Promise<{ socket: string; proc: ChildProcess; stop(): Promise<void> }> {
  const sock = tempSocketPath();
  const proc = spawn(process.execPath, [XENSIM, 'xenstored', '--socket', sock.path], { stdio: ['ignore', 'pipe', 'inherit'] });
  await new Promise<void>((resolve, reject) => {
    let out = '';
    const timer = setTimeout(() => reject(new Error(`xensim did not start: ${out}`)), 15000);
    proc.stdout.on('data', (d: Buffer) => {
      out += d.toString();
      if (out.includes('listening on')) {
        clearTimeout(timer);
        resolve();
      }
    });
    proc.once('exit', (code) => reject(new Error(`xensim exited with ${code}: ${out}`)));
  });
  return {
    socket: sock.path,
    proc,
    stop: () =>
      new Promise<void>((resolve) => {
        proc.once('exit', () => {
          sock.cleanup();
          resolve();
        });
        proc.kill('SIGTERM');
      }),
  };
}
