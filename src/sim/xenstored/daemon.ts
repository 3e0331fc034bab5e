/**
 * The simulated xenstored as a daemon on a Unix socket, the way dom0's
 * xenstored listens on /var/run/xenstored/socket. Every socket connection is
 * dom0 (privileged), as it is for the real daemon.
 */
import { createServer, type Server } from 'node:net';
import { existsSync, unlinkSync } from 'node:fs';
import { connect } from 'node:net';
import { SocketByteStream } from '../../transport/socket.js';
import { SimXenstored } from './server.js';
import { XenstoreError } from '../../errors.js';

export interface XenstoredDaemon {
  readonly xenstored: SimXenstored;
  readonly socketPath: string;
  close(): Promise<void>;
}

/** True when something accepts connections at `path`. */
function socketInUse(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect(path);
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}

/**
 * Listens on `socketPath`. A stale socket file left by a dead daemon is
 * replaced; one that a live daemon answers on is an error.
 */
export async function listenXenstored(socketPath: string, xenstored = new SimXenstored()): Promise<XenstoredDaemon> {
  if (existsSync(socketPath)) {
    if (await socketInUse(socketPath))
      throw new XenstoreError('XS_EBUSY', `${socketPath}: another xenstored is listening there`, { path: socketPath });
    unlinkSync(socketPath);
  }
  const server: Server = createServer((socket) => {
    socket.setNoDelay?.(true);
    xenstored.serve(new SocketByteStream(socket), { domid: 0, privileged: true });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(socketPath, () => {
      server.off('error', reject);
      resolve();
    });
  });
  return {
    xenstored,
    socketPath,
    close: () =>
      new Promise<void>((resolve) => {
        xenstored.close();
        server.close(() => resolve());
      }),
  };
}
