import { execFileSync } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/**
 * Compiles a C file from test/ with gcc and runs it, returning its stdout.
 * The headers come from Debian's libxen-dev; scripts/test-deps.sh installs it.
 */
export function compileAndRun(source: string, flags: string[] = []): string {
  const dir = mkdtempSync(join(tmpdir(), 'xenprobe-'));
  const exe = join(dir, 'probe');
  execFileSync('gcc', ['-Wall', '-Werror', '-O1', ...flags, '-o', exe, source], { stdio: ['ignore', 'pipe', 'pipe'] });
  return execFileSync(exe, { encoding: 'utf8', maxBuffer: 64 << 20 });
}
