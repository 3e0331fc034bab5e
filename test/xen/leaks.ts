/**
 * Leak checks for the Xen suite: every event-channel poll the driver starts
 * on koffi's worker threads must have ended once the platform that started
 * it is closed. Such a poll is invisible to Node's resource lists, yet keeps
 * the process (and a libuv pool thread) alive.
 */
import { loadLibc } from '../../src/ffi/koffi.js';

const running = new Map<number, string>();
let next = 0;
let current = '(before the first test)';

const libc = loadLibc();
const poll = libc.pollAsync.bind(libc);
(libc as { pollAsync: typeof libc.pollAsync }).pollAsync = (fds, nfds, timeoutMs, cb) => {
  const id = ++next;
  running.set(id, current);
  poll(fds, nfds, timeoutMs, (err, res) => {
    running.delete(id);
    cb(err, res);
  });
};

export function testStarted(name: string): void {
  current = name;
}

/** Polls still running, with the test that started each. */
export function runningPolls(): string[] {
  return [...running.values()];
}

/** Timers of a second or more, still set, with where they were set. */
const timers = new Map<unknown, string>();
const realSetTimeout = globalThis.setTimeout;
const realClearTimeout = globalThis.clearTimeout;
globalThis.setTimeout = ((fn: (...a: unknown[]) => void, ms?: number, ...args: unknown[]) => {
  const holder: { t?: NodeJS.Timeout } = {};
  const t = realSetTimeout(
    (...a: unknown[]) => {
      timers.delete(t);
      fn(...a);
    },
    ms,
    ...args,
  );
  holder.t = t;
  if ((ms ?? 0) >= 1000) {
    const where = (new Error().stack ?? '')
      .split('\n')
      .slice(2, 5)
      .map((l) => l.trim())
      .join(' < ');
    timers.set(t, `${ms} ms in ${current}: ${where}`);
  }
  return t;
}) as typeof globalThis.setTimeout;
globalThis.clearTimeout = (t?: NodeJS.Timeout | string | number) => {
  timers.delete(t);
  realClearTimeout(t);
};

/** Long timers still set that would keep the process alive. */
export function liveTimers(): string[] {
  return [...timers.entries()].filter(([t]) => (t as NodeJS.Timeout).hasRef()).map(([, w]) => w);
}
