/** Where a command's main() writes its text (process.stdout and stderr, or a test's capture). */
export interface Output {
  write(text: string): unknown;
}

/**
 * What every command's binary does with its `main`: the exit code it
 * returns, or one line naming the command and the error, exit 1, never a
 * stack trace.
 */
export function runBin(name: string, main: (argv: string[]) => Promise<number>): void {
  main(process.argv.slice(2)).then(
    (code) => {
      process.exitCode = code;
    },
    (e: unknown) => {
      process.stderr.write(`${name}: ${e instanceof Error ? e.message : String(e)}\n`);
      process.exitCode = 1;
    },
  );
}
