/**
 * One client connection of the simulated xenstored: dispatch of every
 * message type, its watches and its open transactions. Framing is the
 * client's own (FramedStream), seen from the other end.
 */
import type { ByteStream } from '../../transport/byte_stream.js';
import { FramedStream } from '../../transport/framed.js';
import type { OutgoingMessage } from '../../transport/message_stream.js';
import { Fifo } from '../../util/fifo.js';
import { formatXsPerm, parseXsPerm, type XsPerm } from '../../wire/xs_perms.js';
import {
  XENSTORE_PAYLOAD_MAX,
  XS_HEADER_SIZE,
  XsType,
  joinPayload,
  splitPayload,
  utf8String,
  xsTypeName,
  type XsMessage,
} from '../../wire/xs_wire.js';
import { NodeTree, XsErr, canonicalPath, mayRead, type Caller, type Change } from './store.js';
import { OK, arg0, directoryPartReply, domidArg, isUnder, partOffset } from './payloads.js';

/** Kinds of event the daemon counts; a connection reports them with {@link XenstoredHost.count}. */
export type XenstoredEvent =
  | 'requests'
  | 'errors'
  | 'watchEventsSent'
  | 'watchEventsDropped'
  | 'transactionsCommitted'
  | 'transactionConflicts'
  | 'droppedConnections';

/**
 * Output a connection may leave unread. Past the first bound its watch
 * events are dropped, as C xenstored drops events a guest does not consume;
 * past the second (replies to requests it keeps sending without reading)
 * the connection is dropped. Either way one client cannot grow the daemon
 * without bound.
 */
export const EVENT_BACKLOG_BYTES = 1 << 20;
export const REPLY_BACKLOG_BYTES = 4 << 20;

/**
 * What a connection may ask of the daemon it belongs to, and nothing more:
 * the store, the quotas, the domain registry, and where to report.
 */
export interface XenstoredHost {
  readonly tree: NodeTree;
  readonly maxWatches: number;
  readonly maxTransactions: number;
  log(line: string): void;
  count(event: XenstoredEvent): void;
  /** The connection has ended. */
  dropped(conn: ServerConnection): void;
  /** Sends the watch events for `changes` to every connection. */
  fire(changes: readonly Change[]): void;
  introduceDomain(domid: number): void;
  releaseDomain(domid: number): void;
  isIntroduced(domid: number): boolean;
  setTarget(domid: number, target: number): void;
}

interface WatchReg {
  /** Absolute path, or the @special name. */
  abs: string;
  token: string;
  /** Set for a relative watch: stripped from event paths, so they are reported relative too. */
  relativePrefix: string | null;
}

/** One client of the simulated xenstored. */
export class ServerConnection {
  private readonly framed: FramedStream;
  /** Replies and events the stream could not take yet, in order. */
  private readonly backlog = new Fifo<OutgoingMessage>();
  private backlogBytes = 0;
  private readonly watches = new Map<string, WatchReg>();
  private readonly transactions = new Map<number, NodeTree>();
  private nextTxId = 1;
  private closed = false;
  /** @internal Its domain is suspended: watch events are dropped (every watch fires again on restore). */
  suspended = false;

  constructor(
    private readonly server: XenstoredHost,
    stream: ByteStream,
    readonly caller: Caller,
  ) {
    this.framed = new FramedStream(stream);
    this.framed.start({
      message: (m) => this.handle(m),
      writable: () => this.drain(),
      closed: (err) => {
        if (err !== undefined && !this.closed) {
          // As C xenstored: a client that sends an oversized frame is dropped.
          this.server.log(`dropping domain ${this.caller.domid} connection: ${err.message}`);
          this.server.count('droppedConnections');
        }
        this.close();
      },
    });
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.watches.clear();
    this.transactions.clear();
    this.backlog.clear();
    this.backlogBytes = 0;
    this.framed.close();
    this.server.dropped(this);
  }

  resetWatches(): void {
    this.watches.clear();
  }

  /**
   * @internal The domain this connection speaks for was restored as domain
   * `domid`, as a guest's kernel reconnects after a restore: relative paths
   * now mean the new home, transactions open across the save are gone (their
   * ids answer ENOENT), and every watch is registered again, so it fires once.
   */
  restored(domid: number): void {
    const oldPrefix = `/local/domain/${this.caller.domid}/`;
    const newPrefix = `/local/domain/${domid}/`;
    this.caller.domid = domid;
    this.suspended = false;
    this.transactions.clear();
    const regs = [...this.watches.values()];
    this.watches.clear();
    for (const w of regs) {
      const reg: WatchReg =
        w.relativePrefix === null
          ? w
          : {
              token: w.token,
              relativePrefix: newPrefix,
              abs: w.abs.startsWith(oldPrefix) ? newPrefix + w.abs.slice(oldPrefix.length) : w.abs,
            };
      this.watches.set(`${reg.abs}\0${reg.token}`, reg);
      const raw =
        reg.relativePrefix !== null && reg.abs.startsWith(reg.relativePrefix) ? reg.abs.slice(reg.relativePrefix.length) : reg.abs;
      queueMicrotask(() => {
        if (this.watches.get(`${reg.abs}\0${reg.token}`) === reg) this.sendEvent(reg, raw);
      });
    }
  }

  private handle(m: XsMessage): void {
    this.server.count('requests');
    let events: Change[] = [];
    try {
      const tree = this.treeFor(m);
      const reply = this.dispatch(m, tree);
      this.send(m.type, m.reqId, m.txId, reply);
      // Live changes, including those a commit just applied; a transaction keeps its own until then.
      events = this.server.tree.changes.splice(0);
    } catch (err) {
      // A fault in the daemon itself answers EIO for that request and is logged; it never takes the process down.
      const errno = err instanceof XsErr ? err.errno : 'EIO';
      if (!(err instanceof XsErr))
        this.server.log(`internal error on ${xsTypeName(m.type)}: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
      this.server.count('errors');
      this.server.tree.changes.length = 0;
      this.send(XsType.Error, m.reqId, m.txId, joinPayload([errno]));
      return;
    }
    // Events after the reply, as xenstored orders them.
    this.server.fire(events);
  }

  private treeFor(m: XsMessage): NodeTree {
    const txScoped = m.type !== XsType.Watch && m.type !== XsType.Unwatch && m.type !== XsType.TransactionStart;
    if (m.txId === 0 || !txScoped) return this.server.tree;
    const t = this.transactions.get(m.txId);
    if (!t) throw new XsErr('ENOENT', `no transaction ${m.txId}`);
    return t;
  }

  private path(raw: string | undefined): string {
    if (raw === undefined) throw new XsErr('EINVAL');
    return canonicalPath(raw, this.caller.domid);
  }

  private dispatch(m: XsMessage, tree: NodeTree): Uint8Array {
    const c = this.caller;
    switch (m.type) {
      case XsType.Read:
        return tree.readable(this.path(arg0(m)), c).value;
      case XsType.Write: {
        const nul = m.payload.indexOf(0);
        if (nul < 0) throw new XsErr('EINVAL', 'WRITE without a value');
        const path = this.path(utf8String(m.payload.subarray(0, nul)));
        tree.write(path, m.payload.slice(nul + 1), c);
        return OK;
      }
      case XsType.Mkdir:
        tree.mkdir(this.path(arg0(m)), c);
        return OK;
      case XsType.Rm:
        tree.rm(this.path(arg0(m)), c);
        return OK;
      case XsType.Directory: {
        const out = joinPayload(tree.readable(this.path(arg0(m)), c).children);
        if (out.length > XENSTORE_PAYLOAD_MAX) throw new XsErr('E2BIG');
        return out;
      }
      case XsType.DirectoryPart:
        return this.directoryPart(m, tree);
      case XsType.GetPerms:
        return joinPayload(tree.readable(this.path(arg0(m)), c).perms.map(formatXsPerm));
      case XsType.SetPerms: {
        const [raw, ...rest] = splitPayload(m.payload);
        const perms: XsPerm[] = [];
        for (const s of rest) {
          const p = parseXsPerm(s);
          if (!p) throw new XsErr('EINVAL', `bad permission ${s}`);
          perms.push(p);
        }
        if (perms.length === 0) throw new XsErr('EINVAL', 'no permissions');
        tree.setPerms(this.path(raw), perms, c);
        return OK;
      }
      case XsType.Watch:
        return this.watch(m);
      case XsType.Unwatch: {
        const [raw, token] = splitPayload(m.payload);
        const abs = raw?.startsWith('@') ? raw : this.path(raw);
        const key = `${abs}\0${token}`;
        if (!this.watches.delete(key)) throw new XsErr('ENOENT');
        return OK;
      }
      case XsType.TransactionStart: {
        if (m.txId !== 0) throw new XsErr('EBUSY', 'TRANSACTION_START inside a transaction');
        if (this.transactions.size >= this.server.maxTransactions) throw new XsErr('ENOSPC');
        let id = this.nextTxId;
        while (this.transactions.has(id) || id === 0) id = (id + 1) >>> 0;
        this.nextTxId = (id + 1) >>> 0;
        this.transactions.set(id, this.server.tree.snapshot());
        return joinPayload([String(id)]);
      }
      case XsType.TransactionEnd:
        return this.endTransaction(m);
      case XsType.GetDomainPath:
        return joinPayload([`/local/domain/${domidArg(arg0(m))}`]);
      case XsType.Introduce: {
        this.requirePrivileged();
        const [d, mfn, port] = splitPayload(m.payload);
        if (mfn === undefined || port === undefined) throw new XsErr('EINVAL');
        this.server.introduceDomain(domidArg(d));
        return OK;
      }
      case XsType.Release:
        this.requirePrivileged();
        this.server.releaseDomain(domidArg(arg0(m)));
        return OK;
      case XsType.Resume: {
        this.requirePrivileged();
        if (!this.server.isIntroduced(domidArg(arg0(m)))) throw new XsErr('ENOENT');
        return OK;
      }
      case XsType.IsDomainIntroduced:
        return joinPayload([this.server.isIntroduced(domidArg(arg0(m))) ? 'T' : 'F']);
      case XsType.SetTarget: {
        this.requirePrivileged();
        const [d, t] = splitPayload(m.payload);
        this.server.setTarget(domidArg(d), domidArg(t));
        return OK;
      }
      case XsType.ResetWatches:
        this.resetWatches();
        this.transactions.clear();
        return OK;
      case XsType.Control: {
        this.requirePrivileged();
        const [cmd, ...params] = splitPayload(m.payload);
        if (cmd === 'print') {
          this.server.log(`control print: ${params.join(' ')}`);
          return OK;
        }
        if (cmd === 'check') return OK;
        if (cmd === 'help') return joinPayload(['check\nprint\nhelp\n']);
        throw new XsErr('EINVAL', `unknown control command ${cmd}`);
      }
      default:
        // ERROR and WATCH_EVENT are replies, not requests; anything else is unknown.
        throw new XsErr('EINVAL', `cannot handle ${xsTypeName(m.type)}`);
    }
  }

  private requirePrivileged(): void {
    if (!this.caller.privileged) throw new XsErr('EACCES');
  }

  private directoryPart(m: XsMessage, tree: NodeTree): Uint8Array {
    const [raw, offS] = splitPayload(m.payload);
    const off = partOffset(offS);
    const node = tree.readable(this.path(raw), this.caller);
    return directoryPartReply(node.children, node.gen, off);
  }

  private watch(m: XsMessage): Uint8Array {
    const [raw, token] = splitPayload(m.payload);
    if (raw === undefined || token === undefined) throw new XsErr('EINVAL');
    let abs: string;
    let relativePrefix: string | null = null;
    if (raw.startsWith('@')) {
      abs = raw;
    } else {
      abs = this.path(raw);
      if (!raw.startsWith('/')) relativePrefix = `/local/domain/${this.caller.domid}/`;
    }
    const key = `${abs}\0${token}`;
    if (this.watches.has(key)) throw new XsErr('EEXIST');
    if (this.watches.size >= this.server.maxWatches) throw new XsErr('E2BIG');
    const reg: WatchReg = { abs, token, relativePrefix };
    this.watches.set(key, reg);
    // Fired once at registration (xenstore.txt, WATCH), after the reply.
    queueMicrotask(() => {
      if (this.watches.get(key) === reg) {
        this.sendEvent(reg, raw);
      }
    });
    return OK;
  }

  private endTransaction(m: XsMessage): Uint8Array {
    const arg = arg0(m);
    if (arg !== 'T' && arg !== 'F') throw new XsErr('EINVAL');
    const tx = this.transactions.get(m.txId);
    if (!tx) throw new XsErr('ENOENT');
    this.transactions.delete(m.txId);
    if (arg === 'F') return OK;
    let changes: Change[];
    try {
      changes = this.server.tree.commit(tx);
    } catch (err) {
      if (err instanceof XsErr && err.errno === 'EAGAIN') this.server.count('transactionConflicts');
      throw err;
    }
    this.server.count('transactionsCommitted');
    this.server.tree.changes.push(...changes);
    return OK;
  }

  /** @internal Sends events for the watches that `changes` trigger. */
  matchChanges(changes: readonly Change[]): void {
    if (this.closed || this.watches.size === 0) return;
    for (const ch of changes) {
      if (!mayRead(ch.perms, this.caller)) continue;
      for (const w of this.watches.values()) {
        if (w.abs.startsWith('@')) continue;
        let epath: string | null = null;
        if (isUnder(ch.path, w.abs)) epath = ch.path;
        else if (ch.removed && isUnder(w.abs, ch.path)) epath = w.abs; // a parent of the watch went away
        if (epath === null) continue;
        if (w.relativePrefix !== null && epath.startsWith(w.relativePrefix)) epath = epath.slice(w.relativePrefix.length);
        this.sendEvent(w, epath);
      }
    }
  }

  /** @internal */
  fireSpecial(name: string): void {
    for (const w of this.watches.values()) if (w.abs === name) this.sendEvent(w, name);
  }

  private sendEvent(w: WatchReg, epath: string): void {
    if (this.suspended) return;
    const payload = joinPayload([epath, w.token]);
    // A long token under a long path can make an event no frame may carry:
    // C xenstored drops such events, and so do we.
    if (payload.length > XENSTORE_PAYLOAD_MAX || this.backlogBytes > EVENT_BACKLOG_BYTES) {
      this.server.count('watchEventsDropped');
      return;
    }
    this.server.count('watchEventsSent');
    this.send(XsType.WatchEvent, 0, 0, payload);
  }

  private send(type: number, reqId: number, txId: number, payload: Uint8Array): void {
    if (this.closed) return;
    const m = { type, reqId, txId, payload };
    if (this.backlog.length === 0 && this.framed.send(m)) return;
    this.backlog.push(m);
    this.backlogBytes += XS_HEADER_SIZE + payload.length;
    if (this.backlogBytes > REPLY_BACKLOG_BYTES) {
      this.server.log(`dropping domain ${this.caller.domid} connection: ${this.backlogBytes} bytes of replies left unread`);
      this.server.count('droppedConnections');
      this.close();
    }
  }

  /** The stream has room again: what waited goes first. */
  private drain(): void {
    for (let m = this.backlog.peek(); m !== undefined && !this.closed; m = this.backlog.peek()) {
      if (!this.framed.send(m)) return;
      this.backlog.shift();
      this.backlogBytes -= XS_HEADER_SIZE + m.payload.length;
    }
  }
}
