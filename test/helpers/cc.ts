import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/**
 * Compiles a C file from test/ with gcc and runs it, returning its stdout.
 * The headers come from Debian's libxen-dev; scripts/test-deps.sh installs it.
 * Only for code the host runs natively (x86_64): a 32-bit build is checked
 * with {@link compileChecks}, which never executes anything.
 */
export function compileAndRun(source: string, flags: string[] = []): string {
  const dir = mkdtempSync(join(tmpdir(), 'xenprobe-'));
  const exe = join(dir, 'probe');
  try {
    execFileSync('gcc', ['-Wall', '-Werror', '-O1', ...flags, '-o', exe, source], { stdio: ['ignore', 'pipe', 'pipe'] });
    return execFileSync(exe, { encoding: 'utf8', maxBuffer: 64 << 20 });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** One figure the compiler must agree with: `expr == value`, named in the error when it does not. */
export interface CCheck {
  name: string;
  expr: string;
  value: number;
}

/**
 * Has gcc check each figure with `_Static_assert(expr == value)`, compiling
 * `prelude` and the asserts with `-fsyntax-only` (nothing is linked or run,
 * so `-m32` works on a kernel without 32-bit execution). Returns the names
 * of the figures the compiler refused, in order; throws if the file fails
 * for any other reason (a missing header, a misspelt field).
 */
export function compileChecks(prelude: string, checks: CCheck[], flags: string[] = []): string[] {
  const dir = mkdtempSync(join(tmpdir(), 'xenprobe-'));
  const src = join(dir, 'checks.c');
  const lines = checks.map((c, i) => `_Static_assert((long long)(${c.expr}) == ${c.value}LL, "figure ${i}: ${c.name}");`);
  writeFileSync(src, `${prelude}\n${lines.join('\n')}\n`);
  try {
    execFileSync('gcc', ['-Wall', '-Werror', '-fsyntax-only', ...flags, src], { stdio: ['ignore', 'pipe', 'pipe'] });
    return [];
  } catch (err) {
    const stderr = String((err as { stderr?: Buffer }).stderr ?? '');
    const failed = [...stderr.matchAll(/static assertion failed: "figure (\d+): ([^"]+)"/g)].map((m) => m[2]!);
    // Any other diagnostic means the check itself is broken, not a figure.
    const other = stderr.split('\n').filter((l) => /\berror\b/.test(l) && !l.includes('static assertion failed'));
    if (failed.length === 0 || other.length > 0) throw new Error(`gcc ${flags.join(' ')} failed:\n${stderr}`);
    return failed;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
