/**
 * Debian's own xenstore tools (xenstore-utils, built on libxenstore) as
 * clients of the simulated xenstored running as a daemon in another process.
 */
import { execFile, execFileSync, spawn } from 'node:child_process';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { XenstoreClient } from '../../src/xenbus/client.js';
import { connectUnixSocket } from '../../src/transport/socket.js';
import { XENSIM, spawnXenstored } from '../helpers/daemon.js';
import { until } from '../helpers/xs.js';

const run = promisify(execFile);

function haveTools(): boolean {
  try {
    execFileSync(
      'sh',
      ['-c', 'command -v xenstore-write xenstore-read xenstore-ls xenstore-list xenstore-rm xenstore-exists xenstore-chmod xenstore-watch'],
      { stdio: 'ignore' },
    );
    return true;
  } catch {
    return false;
  }
}

let daemon: Awaited<ReturnType<typeof spawnXenstored>>;
let env: NodeJS.ProcessEnv;
let xs: XenstoreClient;

async function tool(name: string, ...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await run(name, args, { env, timeout: 10000 });
    return { code: 0, stdout, stderr };
  } catch (err) {
    const e = err as { code?: number; stdout?: string; stderr?: string };
    return { code: typeof e.code === 'number' ? e.code : -1, stdout: e.stdout ?? '', stderr: e.stderr ?? '' };
  }
}

beforeAll(async () => {
  if (!haveTools()) {
    throw new Error("Debian xenstore-utils are not installed: run scripts/test-deps.sh (the README's test command does)");
  }
  daemon = await spawnXenstored();
  env = { ...process.env, XENSTORED_PATH: daemon.socket };
  xs = new XenstoreClient(await connectUnixSocket(daemon.socket));
});

afterAll(async () => {
  xs?.close();
  await daemon?.stop();
});

describe('Debian xenstore tools against xensim xenstored', () => {
  it('xenstore-write and xenstore-read', async () => {
    expect((await tool('xenstore-write', '/tools/a', 'alpha', '/tools/b', 'beta')).code).toBe(0);
    expect((await tool('xenstore-read', '/tools/a')).stdout).toBe('alpha\n');
    expect((await tool('xenstore-read', '/tools/a', '/tools/b')).stdout).toBe('alpha\nbeta\n');
    // Our client sees what the C client wrote, and the other way round.
    expect(await xs.read('/tools/b')).toBe('beta');
    await xs.write('/tools/c', 'from node');
    expect((await tool('xenstore-read', '/tools/c')).stdout).toBe('from node\n');
  });

  it('xenstore-read fails cleanly on a missing node', async () => {
    const r = await tool('xenstore-read', '/tools/missing');
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/couldn't read path/);
  });

  it('xenstore-exists', async () => {
    expect((await tool('xenstore-exists', '/tools/a')).code).toBe(0);
    expect((await tool('xenstore-exists', '/tools/nope')).code).not.toBe(0);
  });

  it('xenstore-list and xenstore-ls', async () => {
    await xs.write('/ls/x/y', 'deep');
    await xs.write('/ls/z', 'top');
    expect((await tool('xenstore-list', '/ls')).stdout.split('\n').filter(Boolean)).toEqual(['x', 'z']);
    expect((await tool('xenstore-ls', '/ls')).stdout).toBe('x = ""\n y = "deep"\nz = "top"\n');
  });

  it('xenstore-ls lists a directory bigger than one reply (DIRECTORY_PART)', async () => {
    const names = Array.from({ length: 300 }, (_, i) => `entry-with-a-long-name-${String(i).padStart(3, '0')}`);
    await Promise.all(names.map((n) => xs.write(`/big/${n}`, '')));
    const out = (await tool('xenstore-list', '/big')).stdout.split('\n').filter(Boolean);
    expect(out).toEqual(names);
  });

  it('xenstore-chmod sets permissions that xenstore-ls -p and our client read back', async () => {
    await xs.write('/perm/node', 'v');
    expect((await tool('xenstore-chmod', '/perm/node', 'n0', 'r5', 'b7')).code).toBe(0);
    expect(await xs.getPerms('/perm/node')).toEqual([
      { perm: 'n', domid: 0 },
      { perm: 'r', domid: 5 },
      { perm: 'b', domid: 7 },
    ]);
    expect((await tool('xenstore-ls', '-p', '/perm')).stdout).toMatch(/node = "v" .*\(n0,r5,b7\)/);
    // Recursive, through the tool's own directory walk.
    await xs.write('/perm/sub/leaf', 'w');
    expect((await tool('xenstore-chmod', '-r', '/perm/sub', 'n0', 'r3')).code).toBe(0);
    expect(await xs.getPerms('/perm/sub/leaf')).toEqual([
      { perm: 'n', domid: 0 },
      { perm: 'r', domid: 3 },
    ]);
  });

  it('xenstore-rm', async () => {
    await xs.write('/rm/a/b', '1');
    expect((await tool('xenstore-rm', '/rm/a')).code).toBe(0);
    expect(await xs.exists('/rm/a/b')).toBe(false);
    expect(await xs.exists('/rm')).toBe(true);
  });

  it('xenstore-watch sees the initial event and changes made by our client', async () => {
    const proc = spawn('xenstore-watch', ['-n', '3', '/watched'], { env });
    let out = '';
    proc.stdout.on('data', (d: Buffer) => (out += d.toString()));
    const exited = new Promise<number | null>((r) => proc.once('exit', r));
    await until(() => out.includes('/watched\n'), 10000);
    await xs.write('/watched/one', '1');
    await xs.write('/watched', 'self');
    expect(await exited).toBe(0);
    expect(out.split('\n').filter(Boolean)).toEqual(['/watched', '/watched/one', '/watched']);
  });

  it('xensim refuses bad arguments with a one-line message', async () => {
    const r = await run(process.execPath, [XENSIM, 'xenstored']).catch((e: { code: number; stderr: string }) => e);
    expect('code' in r && r.code).toBe(2);
    expect('stderr' in r && r.stderr).toBe('xensim xenstored: --socket PATH is required\n');
  });
});
