/**
 * A command's main() run in this process, what it writes captured: the
 * commands take their output streams as arguments for this.
 */
import type { Output } from '../../src/cli/common/bin.js';

export type CommandMain = (args: string[], out: Output, err: Output) => Promise<number>;

/** Runs `main` with `args`; its exit status and what it wrote to each stream. */
export async function runMain(main: CommandMain, args: string[]): Promise<{ code: number; out: string; err: string }> {
  let out = '';
  let err = '';
  const code = await main(args, { write: (t: string) => (out += t) }, { write: (t: string) => (err += t) });
  return { code, out, err };
}
