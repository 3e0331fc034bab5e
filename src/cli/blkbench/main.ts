/**
 * blkbench's main: options in, exit status out; the binary is cli.ts.
 */
import { parseOptions, UsageError } from './options.js';
import { runBench } from './bench.js';
import { writeFileSync } from 'node:fs';
import { chart, summary } from './report.js';
import type { Output } from '../common/bin.js';

/** Runs blkbench with `args`; resolves to the exit status. Output goes to `out` and `err`. */
export async function main(args: string[], out: Output = process.stdout, err: Output = process.stderr): Promise<number> {
  let parsed;
  try {
    parsed = await parseOptions(args);
  } catch (e) {
    if (e instanceof UsageError) {
      err.write(`blkbench: ${e.message}\nTry 'blkbench --help'.\n`);
      return 2;
    }
    throw e;
  }
  if (parsed.kind === 'text') {
    out.write(parsed.text.endsWith('\n') ? parsed.text : `${parsed.text}\n`);
    return 0;
  }
  const o = parsed.options;
  try {
    const report = await runBench(o);
    out.write(o.json ? `${JSON.stringify(report)}\n` : summary(report));
    if (o.plot !== undefined) writeFileSync(o.plot, chart(report));
    const bad = (report.verify_mismatches ?? 0) + (report.baseline?.verify_mismatches ?? 0);
    if (bad > 0) {
      err.write(`blkbench: verify found ${bad} mismatched block${bad === 1 ? '' : 's'}\n`);
      return 1;
    }
    return 0;
  } catch (e) {
    const code = typeof (e as { code?: unknown }).code === 'string' ? `${(e as { code: string }).code}: ` : '';
    err.write(`blkbench: ${code}${e instanceof Error ? e.message : String(e)}\n`);
    return 1;
  }
}
