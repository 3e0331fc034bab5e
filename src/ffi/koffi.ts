/**
 * Loading native libraries through koffi, with the failures turned into
 * typed errors. koffi rather than ffi-napi: ffi-napi 4.0.3 does not build on
 * Node 20 (node_api_basic_finalize), and koffi's calls are cheap (about
 * 0.23 µs against about 2.8 µs for a maintained ffi-napi fork). Even so, no
 * FFI call sits on the per-request path: rings and data pages are plain memory
 * viewed with koffi.view, and only setup, teardown and event-channel kicks
 * cross into C.
 */
import { createRequire } from 'node:module';
import { constants } from 'node:os';
import type * as KoffiModule from 'koffi';
import { PlatformError, XenError } from '../errors.js';

export type Koffi = typeof KoffiModule;
export type LibraryHandle = KoffiModule.LibraryHandle;

let cached: Koffi | undefined;

/** koffi itself (a native module), loaded on first use so simulated-host users never need it. */
export function loadKoffi(): Koffi {
  if (cached !== undefined) return cached;
  try {
    cached = createRequire(import.meta.url)('koffi') as Koffi;
    return cached;
  } catch (cause) {
    throw new PlatformError('XEN_ENOLIB', 'koffi could not be loaded; run npm install', { cause });
  }
}

/** Opens the first of `sonames` that loads; XEN_ENOLIB names the package that provides it. */
export function openLibrary(sonames: readonly string[], debianPackage: string): LibraryHandle {
  const koffi = loadKoffi();
  const failures: string[] = [];
  for (const name of sonames) {
    try {
      return koffi.load(name);
    } catch (err) {
      failures.push(`${name}: ${(err as Error).message}`);
    }
  }
  throw new PlatformError('XEN_ENOLIB', `cannot load ${sonames.join(' or ')} (install Debian's ${debianPackage}): ${failures.join('; ')}`);
}

/** The errno name for a number (ENOENT), or the number. */
export function errnoName(errno: number): string {
  for (const [name, value] of Object.entries(constants.errno)) if (value === errno) return name;
  return `errno ${errno}`;
}

/**
 * The error for a failed open of a Xen device: missing device nodes mean this
 * is not a Xen guest, or the kernel module is not loaded.
 */
export function deviceOpenError(what: string, device: string, module: string, errno: number): XenError {
  const name = errnoName(errno);
  if (name === 'ENOENT' || name === 'ENODEV' || name === 'ENXIO') {
    return new PlatformError('XEN_ENODEV', `${what}: ${device} is missing (${name}): not a Xen guest, or ${module} not loaded`);
  }
  if (name === 'EACCES' || name === 'EPERM') return accessError(device);
  return new PlatformError('XEN_ESYS', `${what}: opening ${device} failed (${name})`);
}

/**
 * The error for a Xen device node this process may not open: which node,
 * and the two usual ways to grant it (docs/guest.md, "Permissions").
 */
export function accessError(device: string, cause?: unknown): XenError {
  return new PlatformError(
    'XEN_EACCES',
    `${device}: permission denied (uid ${process.getuid?.() ?? '?'}); run as root, or give this user ` +
      `the nodes /dev/xen/xenbus, /dev/xen/gntalloc and /dev/xen/evtchn (a udev rule or chgrp + chmod g+rw: see docs/guest.md)`,
    { cause },
  );
}

/** libc, for the few calls Node does not offer (poll, eventfd, fcntl, dup). */
export interface Libc {
  poll(fds: Buffer, nfds: number, timeoutMs: number): number;
  pollAsync(fds: Buffer, nfds: number, timeoutMs: number, cb: (err: unknown, res: number) => void): void;
  eventfd(initval: number, flags: number): number;
  setNonBlocking(fd: number): void;
  /** dup(2): a second descriptor for the same open file, or -1. */
  dup(fd: number): number;
  /** flock(2): 0, or -1 with errno set. */
  flock(fd: number, op: number): number;
  errno(): number;
}

let libc: Libc | undefined;

export function loadLibc(): Libc {
  if (libc !== undefined) return libc;
  const koffi = loadKoffi();
  const lib = openLibrary(['libc.so.6'], 'libc6');
  const poll = lib.func('int poll(void *fds, unsigned long nfds, int timeout)');
  const eventfd = lib.func('int eventfd(unsigned int initval, int flags)');
  const fcntl = lib.func('int fcntl(int fd, int cmd, ...)');
  const dup = lib.func('int dup(int fd)');
  const flock = lib.func('int flock(int fd, int op)');
  const F_GETFL = 3;
  const F_SETFL = 4;
  const O_NONBLOCK = 0o4000;
  libc = {
    poll: (fds, nfds, t) => poll(fds, nfds, t) as number,
    pollAsync: (fds, nfds, t, cb) => {
      poll.async(fds, nfds, t, cb);
    },
    eventfd: (v, f) => eventfd(v, f) as number,
    setNonBlocking: (fd) => {
      const flags = fcntl(fd, F_GETFL) as number;
      if (flags < 0 || (fcntl(fd, F_SETFL, 'int', flags | O_NONBLOCK) as number) < 0) {
        throw new PlatformError('XEN_ESYS', `fcntl(${fd}, O_NONBLOCK) failed (${errnoName(koffi.errno())})`);
      }
    },
    dup: (fd) => dup(fd) as number,
    flock: (fd, op) => flock(fd, op) as number,
    errno: () => koffi.errno(),
  };
  return libc;
}
