/**
 * blkcheck: the simulated blkback passes every check, hostile ones
 * included; a backend that errs, breaks its ring or publishes keys out of
 * range fails the checks that look at that; the command line refuses to
 * write on a disk it was not told is scratch.
 */
import { describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { main, runChecks, table, MIN_DISK, type Options } from '../../src/cli/blkcheck/main.js';
import { CHECKS } from '../../src/cli/blkcheck/checks.js';
import { HOSTILE } from '../../src/cli/blkcheck/hostile.js';
import { differs, fill } from '../../src/cli/blkcheck/pattern.js';
import { runMain } from '../helpers/cli.js';

const CLI = fileURLToPath(new URL('../../dist/src/cli/blkcheck/cli.js', import.meta.url));

const options = (o: Partial<Options> = {}): Options => ({
  target: { kind: 'ramdisk', size: MIN_DISK },
  hostile: false,
  json: false,
  only: null,
  timeoutMs: 10_000,
  ...o,
});

/** Runs main() in this process, capturing what it writes. */
const run = (args: string[]): Promise<{ code: number; out: string; err: string }> => runMain(main, args);

describe('blkcheck on the simulated blkback', () => {
  it('passes every check, the hostile ones included', async () => {
    const r = await runChecks(options({ hostile: true }));
    expect(r.rows.map((x) => x.id)).toEqual([...CHECKS, ...HOSTILE].map((c) => c.id));
    const bad = r.rows.filter((x) => x.result !== 'pass');
    expect(bad, JSON.stringify(bad)).toEqual([]);
    expect(r.counts).toEqual({ pass: CHECKS.length + HOSTILE.length, fail: 0, 'not offered': 0, skipped: 0 });
    // What each forbidden request got: refused, never served.
    const answer = (id: string) => r.rows.find((x) => x.id === id)!.detail;
    for (const id of [
      'zero-segments',
      'too-many-segments',
      'first-after-last',
      'last-past-page',
      'past-the-end',
      'unshared-grant',
      'read-only-grant',
    ]) {
      expect(answer(id), id).toMatch(/^answered BLKIF_RSP_ERROR; still serving/);
    }
    expect(answer('unknown-operation')).toMatch(/BLKIF_RSP_EOPNOTSUPP/);
    expect(answer('req-prod-overflow')).toMatch(/^answered nothing; still serving/);
    const t = table(r);
    expect(t).toContain('robustness');
    expect(t).toContain(`${CHECKS.length + HOSTILE.length} passed, 0 failed`);
  }, 120_000);

  it('4096-byte sectors: every check passes but the partial pages, which such a disk does not allow', async () => {
    const r = await runChecks(options({ hostile: true, sim: { sectorSize: 4096 } }));
    const notPass = r.rows.filter((x) => x.result !== 'pass').map((x) => [x.id, x.result]);
    expect(notPass).toEqual([['partial-pages', 'skipped']]);
    expect(r.rows.find((x) => x.id === 'sectors-unit')!.detail).toBe('131072 x 512 = 67108864 bytes');
  }, 120_000);

  it('a backend that fails writes fails the checks that write, not the ones that only read keys', async () => {
    const r = await runChecks(options({ only: ['keys', 'direct-segments', 'flush', 'partial-pages'] }), {
      disk: (d) => d.inject({ kind: 'error', ops: ['write'] }),
    });
    const by = Object.fromEntries(r.rows.map((x) => [x.id, x]));
    expect(by.keys!.result).toBe('pass');
    expect(by['direct-segments']).toMatchObject({ result: 'fail', detail: expect.stringContaining('BLKIF_EIO') as unknown });
    expect(by.flush!.result).toBe('fail');
    expect(by['partial-pages']).toMatchObject({ result: 'fail', detail: expect.stringContaining('BLKIF_RSP_ERROR') as unknown });
  });

  it('a backend that overruns its response ring fails the check that meets it', async () => {
    const r = await runChecks(options({ only: ['direct-segments'] }), {
      disk: (d) => d.inject({ kind: 'rsp-overflow', ops: ['read'], count: 1 }),
    });
    expect(r.rows[0]).toMatchObject({ result: 'fail', detail: expect.stringContaining('BLKIF_EPROTO') as unknown });
  });

  it('keys out of range fail the negotiation checks; what is not offered says so', async () => {
    const r = await runChecks(
      options({
        only: ['connect', 'ring-order', 'discard-keys', 'indirect-offer', 'every-queue', 'grants-beyond-persistent'],
        sim: { keys: { 'max-ring-page-order': '9', 'discard-alignment': '4096' }, maxIndirectSegments: 0, maxQueues: 1, persistent: false },
      }),
    );
    const by = Object.fromEntries(r.rows.map((x) => [x.id, x.result]));
    expect(by).toEqual({
      // The driver refuses a discard-alignment it cannot believe: no connect, and the check says why.
      connect: 'fail',
      'ring-order': 'fail',
      'discard-keys': 'fail',
      'indirect-offer': 'not offered',
      'every-queue': 'not offered',
      'grants-beyond-persistent': 'not offered',
    });
  });
});

describe('blkcheck command line', () => {
  it('writes nowhere it was not told is scratch, and says how to ask', async () => {
    for (const [args, msg] of [
      [['--xen'], /--xen needs --vdev/],
      [['--xen', '--vdev', '51712'], /give --scratch/],
      [['--image', '/tmp/x.img'], /give --scratch/],
      [['--ramdisk', '64m', '--image', 'x'], /alternatives/],
      [['--vdev', '5'], /only applies with --xen/],
      [['--frobnicate'], /Unknown argument/],
    ] as const) {
      const r = await run([...args]);
      expect(r.code, args.join(' ')).toBe(2);
      expect(r.err).toMatch(msg);
      expect(r.out).toBe('');
    }
  });

  it('--help names every option; the binary prints JSON and exits 0 when all pass, 1 on a disk too small', () => {
    const help = spawnSync(process.execPath, [CLI, '--help'], { encoding: 'utf8' });
    expect(help.status).toBe(0);
    for (const o of ['--xen', '--vdev', '--other-vdev', '--image', '--ramdisk', '--scratch', '--hostile', '--only', '--json'])
      expect(help.stdout).toContain(o);
    const ok = spawnSync(process.execPath, [CLI, '--only', 'keys,last-sector', '--json'], { encoding: 'utf8' });
    expect(ok.status, ok.stderr).toBe(0);
    const j = JSON.parse(ok.stdout) as { rows: Array<{ id: string; result: string }>; counts: { pass: number } };
    expect(j.rows.map((x) => [x.id, x.result])).toEqual([
      ['keys', 'pass'],
      ['last-sector', 'pass'],
    ]);
    const small = spawnSync(process.execPath, [CLI, '--ramdisk', '8m'], { encoding: 'utf8' });
    expect(small.status).toBe(1);
    expect(small.stderr).toMatch(/^blkcheck: the disk has 8388608 bytes; the checks need 67108864/);
  });

  it('the pattern tells where its bytes belong', () => {
    const a = fill(new Uint8Array(8192), 4096, 1);
    expect(differs(a, 4096, 1)).toBeNull();
    expect(differs(a, 4608, 1)).toBe('byte 4609 differs'); // its offset's second byte is the first to differ
    expect(differs(a, 4096, 2)).not.toBeNull();
  });
});
