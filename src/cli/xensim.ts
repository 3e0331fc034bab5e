#!/usr/bin/env node
/**
 * xensim: runs pieces of the simulated Xen host as processes.
 *
 *   xensim xenstored --socket PATH   serve xenstore on a Unix socket (foreground)
 */
import { parseArgs } from 'node:util';
import { SimXenstored } from '../sim/xenstored/server.js';
import { listenXenstored } from '../sim/xenstored/daemon.js';

const USAGE = `usage: xensim xenstored --socket PATH [--verbose]

  xenstored   a wire-compatible xenstored on a Unix socket; every connection
              is dom0. Point Debian's xenstore tools at it with
              XENSTORED_PATH=PATH. Runs in the foreground until SIGINT/SIGTERM.

  --socket PATH   where to listen (required)
  --verbose       log dropped connections and control prints to stderr
`;

async function main(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  if (cmd === undefined || cmd === '--help' || cmd === '-h') {
    process.stdout.write(USAGE);
    return cmd === undefined ? 2 : 0;
  }
  if (cmd !== 'xenstored') {
    process.stderr.write(`xensim: unknown command "${cmd}"\n${USAGE}`);
    return 2;
  }
  let values: { socket?: string; verbose?: boolean; help?: boolean };
  try {
    ({ values } = parseArgs({
      args: rest,
      options: { socket: { type: 'string' }, verbose: { type: 'boolean' }, help: { type: 'boolean', short: 'h' } },
      strict: true,
    }));
  } catch (err) {
    process.stderr.write(`xensim: ${(err as Error).message}\n`);
    return 2;
  }
  if (values.help) {
    process.stdout.write(USAGE);
    return 0;
  }
  if (!values.socket) {
    process.stderr.write('xensim xenstored: --socket PATH is required\n');
    return 2;
  }
  const log = values.verbose ? (line: string) => process.stderr.write(`xensim: ${line}\n`) : undefined;
  const daemon = await listenXenstored(values.socket, new SimXenstored({ log }));
  process.stdout.write(`xensim xenstored listening on ${daemon.socketPath}\n`);
  await new Promise<void>((resolve) => {
    const stop = (): void => resolve();
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
  });
  await daemon.close();
  return 0;
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (err: unknown) => {
    process.stderr.write(`xensim: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exit(1);
  },
);
