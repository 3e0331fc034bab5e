/**
 * Property suite for blkbench's command line, seeded (FUZZ_SEED replays it):
 * any argv gives options that pass their own checks, help text, or a
 * one-line UsageError; nothing else is thrown.
 */
import { describe, expect, it } from 'vitest';
import { parseOptions, UsageError } from '../../src/cli/blkbench/options.js';
import { fuzz } from '../helpers/fuzz.js';
import { SWITCHES, VALUE_OPTIONS } from '../helpers/blkbench.js';

const NAMES = [
  ...VALUE_OPTIONS,
  ...SWITCHES,
  '--no-persistent',
  '--no-indirect',
  '--no-pool',
  '--no-progress',
  '--help',
  '-h',
  '--version',
  '--bogus',
  '-x',
  '--',
];
const VALUES = [
  '0',
  '1',
  '-1',
  '3',
  '512',
  '4k',
  '1m',
  '1t',
  '1.5',
  'NaN',
  'Infinity',
  '1e309',
  'randread',
  'randrw',
  'sideways',
  '/tmp/x.img',
  '51712',
  'xvda',
  '',
  ' ',
  '4 k',
  '64KiB',
  '9007199254740993',
  '0x10',
  'true',
  'false',
];

describe('fuzz: blkbench command lines', () => {
  it('every argv parses to checked options, help text, or one UsageError line', async () => {
    const f = fuzz('blkbench argv');
    for (const c of f.cases(2000, 4000)) {
      const argv: string[] = [];
      for (let i = 0, n = f.int(7); i < n; i++) {
        if (f.chance(0.7)) argv.push(f.pick(NAMES));
        if (f.chance(0.7)) argv.push(f.pick(VALUES));
      }
      try {
        const r = await parseOptions(argv);
        if (r.kind === 'text') {
          f.tally.add('text');
          continue;
        }
        const o = r.options;
        f.tally.add('run');
        expect(Number.isSafeInteger(o.bs) && o.bs > 0 && o.bs % 512 === 0, argv.join(' ')).toBe(true);
        expect(Number.isSafeInteger(o.iodepth) && o.iodepth >= 1, argv.join(' ')).toBe(true);
        expect(Number.isSafeInteger(o.offset) && o.offset % 512 === 0, argv.join(' ')).toBe(true);
        expect(o.runtime === undefined || (Number.isFinite(o.runtime) && o.runtime > 0), argv.join(' ')).toBe(true);
      } catch (err) {
        expect(err, `seed ${f.seed}, case ${c}: ${JSON.stringify(argv)} threw ${String(err)}`).toBeInstanceOf(UsageError);
        expect((err as Error).message).not.toContain('\n');
        f.tally.add('usage error');
      }
    }
    f.report('command lines', 'usage error', 'run', 'text');
  }, 30_000);
});
