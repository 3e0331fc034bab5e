/**
 * The simulated xenstored's node tree.
 *
 * Nodes are immutable once stored: every change replaces the node object.
 * That makes a transaction's snapshot a shallow copy of the path map, and
 * lets a commit tell, node by node, whether anything it read or wrote was
 * changed by someone else since (each replacement takes a fresh generation).
 *
 * Errors are thrown as {@link XsErrno} values; the server turns them into
 * ERROR replies.
 */
import { XENSTORE_ABS_PATH_MAX, XENSTORE_REL_PATH_MAX } from '../../wire/xs_wire.js';
import { canReadPerm, canWritePerm, type XsPerm } from '../../wire/xs_perms.js';
import type { XsErrno } from '../../errors.js';

export class XsErr extends Error {
  constructor(
    readonly errno: XsErrno,
    message?: string,
  ) {
    super(message ?? errno);
  }
}

export interface XsNode {
  readonly value: Uint8Array;
  readonly perms: readonly XsPerm[];
  readonly children: readonly string[];
  /** Changes whenever this node (value, perms or child list) is replaced. */
  readonly gen: number;
}

/** Who is asking: the connection's domain and what it may act as. */
export interface Caller {
  domid: number;
  /** dom0 and the toolstack: every permission check passes. */
  privileged: boolean;
  /** SET_TARGET: this domain may act with the target's rights. */
  target?: number;
}

/** A change, for watches: the path and whether it was a recursive removal. */
export interface Change {
  path: string;
  removed: boolean;
  /** Permissions of the node as they were (for removal) or are: watch events are filtered by them. */
  perms: readonly XsPerm[];
}

const EMPTY = new Uint8Array(0);
const VALID_PATH = /^[A-Za-z0-9\-/_@]*$/;

/** Generation counter shared by the live tree and every transaction. */
let generation = 1;
const nextGen = (): number => generation++;

/** Turns a request path into an absolute one, checking it as xenstored does. */
export function canonicalPath(path: string, domid: number): string {
  if (path.length === 0) throw new XsErr('EINVAL', 'empty path');
  let abs = path;
  if (!path.startsWith('/')) {
    if (path.length > XENSTORE_REL_PATH_MAX) throw new XsErr('EINVAL', 'relative path too long');
    abs = `/local/domain/${domid}/${path}`;
  }
  if (abs.length > XENSTORE_ABS_PATH_MAX) throw new XsErr('EINVAL', 'path too long');
  if (!VALID_PATH.test(abs) || abs.includes('//') || (abs.length > 1 && abs.endsWith('/'))) {
    throw new XsErr('EINVAL', `invalid path ${path}`);
  }
  return abs;
}

export function parentPath(path: string): string {
  const i = path.lastIndexOf('/');
  return i <= 0 ? '/' : path.slice(0, i);
}

function leafName(path: string): string {
  return path.slice(path.lastIndexOf('/') + 1);
}

function permFor(perms: readonly XsPerm[], caller: Caller): XsPerm['perm'] | 'owner' {
  if (caller.privileged) return 'owner';
  const owner = perms[0]!;
  if (owner.domid === caller.domid || (caller.target !== undefined && owner.domid === caller.target)) return 'owner';
  for (let i = 1; i < perms.length; i++) {
    const p = perms[i]!;
    if (p.domid === caller.domid) return p.perm;
  }
  if (caller.target !== undefined) {
    for (let i = 1; i < perms.length; i++) if (perms[i]!.domid === caller.target) return perms[i]!.perm;
  }
  return owner.perm;
}

export function mayRead(perms: readonly XsPerm[], caller: Caller): boolean {
  const p = permFor(perms, caller);
  return p === 'owner' || canReadPerm(p);
}

export function mayWrite(perms: readonly XsPerm[], caller: Caller): boolean {
  const p = permFor(perms, caller);
  return p === 'owner' || canWritePerm(p);
}

/**
 * A view of the tree: the live store, or a transaction's snapshot that
 * records what it touched.
 */
export class NodeTree {
  /** path -> generation seen at first access (0 = absent). Only tracked in transactions. */
  readonly accessed: Map<string, number> | null;
  /** Paths written or removed here (for commit). */
  readonly modified = new Set<string>();
  /** Watch-relevant changes, fired on commit (or at once for the live tree). */
  readonly changes: Change[] = [];

  constructor(
    readonly nodes: Map<string, XsNode>,
    tracking: boolean,
  ) {
    this.accessed = tracking ? new Map() : null;
  }

  static createRoot(): NodeTree {
    const nodes = new Map<string, XsNode>();
    const perms: XsPerm[] = [{ perm: 'n', domid: 0 }];
    nodes.set('/', { value: EMPTY, perms, children: [], gen: nextGen() });
    return new NodeTree(nodes, false);
  }

  /** A transaction snapshot of this tree. */
  snapshot(): NodeTree {
    return new NodeTree(new Map(this.nodes), true);
  }

  get(path: string): XsNode | undefined {
    const n = this.nodes.get(path);
    if (this.accessed && !this.accessed.has(path)) this.accessed.set(path, n ? n.gen : 0);
    return n;
  }

  private put(path: string, node: XsNode | undefined): void {
    this.get(path); // record the pre-change generation
    if (node) this.nodes.set(path, node);
    else this.nodes.delete(path);
    this.modified.add(path);
  }

  /** Reads a node the caller may read. */
  readable(path: string, caller: Caller): XsNode {
    const n = this.get(path);
    if (!n) throw new XsErr('ENOENT');
    if (!mayRead(n.perms, caller)) throw new XsErr('EACCES');
    return n;
  }

  write(path: string, value: Uint8Array, caller: Caller): void {
    const n = this.get(path);
    if (n) {
      if (!mayWrite(n.perms, caller)) throw new XsErr('EACCES');
      this.put(path, { ...n, value, gen: nextGen() });
      this.changes.push({ path, removed: false, perms: n.perms });
      return;
    }
    this.create(path, value, caller);
  }

  mkdir(path: string, caller: Caller): void {
    const n = this.get(path);
    if (n) {
      if (!mayWrite(n.perms, caller)) throw new XsErr('EACCES');
      return;
    }
    this.create(path, EMPTY, caller);
  }

  /**
   * Creates `path` and any missing ancestors. The caller needs write access
   * to the nearest existing ancestor; new nodes inherit its permissions, but
   * an unprivileged domain owns what it creates (as xenstored does).
   */
  private create(path: string, value: Uint8Array, caller: Caller): void {
    const missing: string[] = [];
    let p = path;
    let anc: XsNode | undefined;
    for (;;) {
      missing.push(p);
      p = parentPath(p);
      anc = this.get(p);
      if (anc) break;
    }
    if (!mayWrite(anc.perms, caller)) throw new XsErr('EACCES');
    let perms: readonly XsPerm[] = anc.perms;
    if (!caller.privileged && perms[0]!.domid !== caller.domid) {
      perms = [{ perm: perms[0]!.perm, domid: caller.domid }, ...perms.slice(1)];
    }
    // Top-down: each new node is added to its parent's child list.
    for (let i = missing.length - 1; i >= 0; i--) {
      const np = missing[i]!;
      const parent = this.get(parentPath(np))!;
      this.put(parentPath(np), { ...parent, children: [...parent.children, leafName(np)], gen: nextGen() });
      this.put(np, { value: i === 0 ? value : EMPTY, perms, children: [], gen: nextGen() });
    }
    // One event, for the path written: watchers of the new ancestors match it by prefix (as in C xenstored).
    this.changes.push({ path, removed: false, perms });
  }

  rm(path: string, caller: Caller): void {
    if (path === '/') throw new XsErr('EINVAL', 'cannot remove the root');
    const n = this.get(path);
    if (!n) {
      // Absent is fine, unless the parent is absent too (xenstore.txt, RM).
      if (!this.get(parentPath(path))) throw new XsErr('ENOENT');
      return;
    }
    if (!mayWrite(n.perms, caller)) throw new XsErr('EACCES');
    const parent = this.get(parentPath(path))!;
    const leaf = leafName(path);
    this.put(parentPath(path), { ...parent, children: parent.children.filter((c) => c !== leaf), gen: nextGen() });
    this.removeSubtree(path, n);
    this.changes.push({ path, removed: true, perms: n.perms });
  }

  private removeSubtree(path: string, n: XsNode): void {
    for (const c of n.children) {
      const cp = path === '/' ? `/${c}` : `${path}/${c}`;
      const cn = this.get(cp);
      if (cn) this.removeSubtree(cp, cn);
    }
    this.put(path, undefined);
  }

  setPerms(path: string, perms: readonly XsPerm[], caller: Caller): void {
    const n = this.get(path);
    if (!n) throw new XsErr('ENOENT');
    if (permFor(n.perms, caller) !== 'owner') throw new XsErr('EACCES');
    // An unprivileged owner may share the node but not give it away.
    if (!caller.privileged && perms[0]!.domid !== n.perms[0]!.domid) throw new XsErr('EPERM');
    this.put(path, { ...n, perms, gen: nextGen() });
    this.changes.push({ path, removed: false, perms });
  }

  /**
   * Applies a committed transaction `tx` to this (live) tree, or throws
   * EAGAIN if any node it accessed has changed here since its snapshot.
   */
  commit(tx: NodeTree): Change[] {
    for (const [path, gen] of tx.accessed!) {
      const live = this.nodes.get(path);
      if ((live ? live.gen : 0) !== gen) throw new XsErr('EAGAIN', `conflict on ${path}`);
    }
    for (const path of tx.modified) {
      const n = tx.nodes.get(path);
      if (n) this.nodes.set(path, n);
      else this.nodes.delete(path);
    }
    return tx.changes;
  }
}
