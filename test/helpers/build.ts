/**
 * Vitest's global setup: compiles the project before any test runs, every
 * time. Worker threads (the simulated blkback's queues) and spawned
 * processes (xensim) load the compiled JavaScript from dist/, not the
 * TypeScript under test, so a test must never start on a build older than
 * the source. tsc's incremental build makes an up-to-date check cheap.
 */
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('../../', import.meta.url));

export default function setup(): void {
  execFileSync(
    process.execPath,
    [`${root}node_modules/typescript/bin/tsc`, '-p', 'tsconfig.json', '--incremental', '--tsBuildInfoFile', 'dist/.tsbuildinfo'],
    {
      cwd: root,
      stdio: 'inherit',
    },
  );
}
