/**
 * A wire-compatible xenstored. It serves any number of connections, each a
 * {@link ByteStream} with the domain it speaks for: in-process pipes for
 * tests and the simulated host, Unix sockets for the daemon (see daemon.ts),
 * which Debian's own xenstore tools use as they would the real one.
 *
 * Semantics follow Xen's own xenstore.txt and C xenstored where the text is
 * silent: per-node permissions checked against the connection's domain,
 * transactions on snapshots with conflict detection (EAGAIN at commit),
 * watches with relative paths and the @introduceDomain / @releaseDomain
 * specials, DIRECTORY_PART, and the limits (a request over
 * XENSTORE_PAYLOAD_MAX drops the connection, as xenstored does).
 */
import type { ByteStream } from '../../transport/byte_stream.js';
import { createMemoryPipe, type MemoryPipeOptions } from '../../transport/memory.js';
import { NodeTree, XsErr, type Caller, type Change } from './store.js';
import { ServerConnection, type XenstoredEvent, type XenstoredHost } from './connection.js';

export interface SimXenstoredOptions {
  /** One line per notable event (connections, dropped clients). */
  log?: (line: string) => void;
  /** Watches one connection may hold (C xenstored's default quota is 128). */
  maxWatches?: number;
  /** Open transactions per connection (C xenstored's default quota is 10). */
  maxTransactions?: number;
}

export interface ConnectOptions {
  /** The domain this connection speaks for (default 0). */
  domid?: number;
  /** Default: true for dom0, false otherwise. */
  privileged?: boolean;
  /** Makes the in-memory channel difficult (small pieces, short writes). */
  pipe?: MemoryPipeOptions;
}

export interface SimXenstoredStats {
  connections: number;
  requests: number;
  errors: number;
  watchEventsSent: number;
  /** Events not sent: larger than a frame may carry, or for a connection that leaves too much unread. */
  watchEventsDropped: number;
  transactionsCommitted: number;
  transactionConflicts: number;
  droppedConnections: number;
}

/** Largest domid a guest can have (DOMID_FIRST_RESERVED - 1). */
const DOMID_MAX = 0x7fef;

/**
 * The daemon. Its connections see it only through `XenstoredHost`;
 * its users through the methods below and {@link SimXenstored.stats}.
 */
export class SimXenstored {
  /** @internal The store; connections reach it through {@link XenstoredHost}. */
  readonly tree = NodeTree.createRoot();
  private readonly conns = new Set<ServerConnection>();
  private readonly introduced = new Set<number>([0]);
  private readonly targets = new Map<number, number>();
  private readonly counters: SimXenstoredStats = {
    connections: 0,
    requests: 0,
    errors: 0,
    watchEventsSent: 0,
    watchEventsDropped: 0,
    transactionsCommitted: 0,
    transactionConflicts: 0,
    droppedConnections: 0,
  };
  readonly maxWatches: number;
  readonly maxTransactions: number;
  /** What connections are given of the daemon. */
  private readonly host: XenstoredHost;

  constructor(private readonly options: SimXenstoredOptions = {}) {
    this.maxWatches = options.maxWatches ?? 128;
    this.maxTransactions = options.maxTransactions ?? 10;
    // What a freshly started xenstored plus xen-init-dom0 leave behind.
    const dom0: Caller = { domid: 0, privileged: true };
    this.tree.mkdir('/local/domain/0', dom0);
    this.tree.mkdir('/tool', dom0);
    this.tree.changes.length = 0;
    this.host = {
      tree: this.tree,
      maxWatches: this.maxWatches,
      maxTransactions: this.maxTransactions,
      log: (line) => this.log(line),
      count: (event: XenstoredEvent) => void this.counters[event]++,
      dropped: (conn) => void this.conns.delete(conn),
      fire: (changes) => this.fire(changes),
      introduceDomain: (domid) => this.introduceDomain(domid),
      releaseDomain: (domid) => this.releaseDomain(domid),
      isIntroduced: (domid) => this.isIntroduced(domid),
      setTarget: (domid, target) => this.setTarget(domid, target),
    };
  }

  /** Counters since start. */
  stats(): SimXenstoredStats {
    return { ...this.counters };
  }

  private log(line: string): void {
    this.options.log?.(line);
  }

  /** Serves a connection over `stream` for domain `domid`. */
  serve(stream: ByteStream, opts: { domid?: number; privileged?: boolean } = {}): ServerConnection {
    const domid = opts.domid ?? 0;
    const conn = new ServerConnection(this.host, stream, {
      domid,
      privileged: opts.privileged ?? domid === 0,
      target: this.targets.get(domid),
    });
    this.conns.add(conn);
    this.counters.connections++;
    return conn;
  }

  /** An in-memory connection; returns the client's end. */
  connect(opts: ConnectOptions = {}): ByteStream {
    const [client, server] = createMemoryPipe(opts.pipe ?? {});
    this.serve(server, opts);
    return client;
  }

  get connectionCount(): number {
    return this.conns.size;
  }

  isIntroduced(domid: number): boolean {
    return this.introduced.has(domid);
  }

  /** INTRODUCE without the wire: the domain may now talk to xenstore. */
  introduceDomain(domid: number): void {
    if (!Number.isInteger(domid) || domid <= 0 || domid > DOMID_MAX) throw new XsErr('EINVAL', `bad domid ${domid}`);
    this.introduced.add(domid);
    this.fireSpecial('@introduceDomain');
  }

  /** RELEASE without the wire: the domain's connections' watches are dropped. */
  releaseDomain(domid: number): void {
    if (!this.introduced.delete(domid)) throw new XsErr('ENOENT', `domain ${domid} is not introduced`);
    for (const c of this.conns) if (c.caller.domid === domid) c.resetWatches();
    this.fireSpecial('@releaseDomain');
  }

  /**
   * A restore of domain `from` as domain `to` (the same id, or a new one):
   * its connections now speak for `to`, lose their open transactions, and
   * have every watch fire again. The toolstack's part (the new home and
   * device directories) is the caller's.
   */
  /** The domain is suspended (being saved): its connections get no watch event until {@link restoreDomain}. */
  suspendDomain(domid: number): void {
    for (const c of this.conns) if (c.caller.domid === domid) c.suspended = true;
  }

  restoreDomain(from: number, to: number): void {
    if (to !== from) {
      this.introduced.delete(from);
      this.introduceDomain(to);
    }
    for (const c of this.conns) if (c.caller.domid === from) c.restored(to);
  }

  /** SET_TARGET: `domid` may act with `target`'s rights, on open connections and new ones. */
  setTarget(domid: number, target: number): void {
    this.targets.set(domid, target);
    for (const c of this.conns) if (c.caller.domid === domid) c.caller.target = target;
  }

  private fire(changes: readonly Change[]): void {
    if (changes.length === 0) return;
    for (const conn of [...this.conns]) {
      try {
        conn.matchChanges(changes);
      } catch (err) {
        // One connection's events must never take the daemon (or another client) down.
        this.log(
          `dropping domain ${conn.caller.domid} connection: its watch events failed: ${err instanceof Error ? err.message : String(err)}`,
        );
        this.counters.droppedConnections++;
        conn.close();
      }
    }
  }

  private fireSpecial(name: string): void {
    for (const conn of this.conns) conn.fireSpecial(name);
  }

  close(): void {
    for (const c of [...this.conns]) c.close();
  }
}
