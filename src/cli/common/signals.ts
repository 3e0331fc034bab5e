/**
 * Removing what a command made when it is interrupted. A signal's default
 * action ends the process without running `finally` blocks, so a temporary
 * image in /dev/shm (memory, not disk) would outlive an interrupted run.
 * While watched, SIGINT, SIGTERM and SIGHUP first remove the paths, then
 * end the process by the same signal again (the exit status a shell
 * expects, 128 + its number). SIGKILL cannot be caught; nothing is left
 * to do then.
 */
import { rmSync } from 'node:fs';

const SIGNALS = ['SIGINT', 'SIGTERM', 'SIGHUP'] as const;

/** Removes `paths` if one of the signals comes; returns the function that stops watching. */
export function removeOnSignal(...paths: string[]): () => void {
  const onSignal = (signal: NodeJS.Signals): void => {
    stop();
    for (const p of paths) {
      try {
        rmSync(p, { recursive: true, force: true });
      } catch {
        // What cannot be removed (a file system still mounted in it) stays; the signal still ends the process.
      }
    }
    process.kill(process.pid, signal);
  };
  const stop = (): void => {
    for (const s of SIGNALS) process.removeListener(s, onSignal);
  };
  for (const s of SIGNALS) process.once(s, onSignal);
  return stop;
}
