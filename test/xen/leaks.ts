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
