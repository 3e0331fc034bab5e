import { XenstoreError, isXenError } from '../errors.js';
import { XsType, joinPayload, payloadString, splitPayload, utf8String } from '../wire/xs_wire.js';
import { formatXsPerm, parseXsPerm, type XsPerm } from '../wire/xs_perms.js';

/** Options every xenstore request takes. */
export interface RequestOptions {
  /** Abort the request: it rejects with XS_ABORTED and its late reply is discarded. */
  signal?: AbortSignal;
  /** Reject with XS_TIMEOUT after this many milliseconds (default: the client's). */
  timeoutMs?: number;
}

const MAX_DIRECTORY_PART_RESTARTS = 16;
/**
 * Parts one DIRECTORY_PART listing may take, at most. Each part carries up
 * to about 4 KiB of names, so this allows listings of 16 MiB, far past any
 * xenstored's quotas; a daemon that never sends the end marker is broken.
 */
export const MAX_DIRECTORY_PARTS = 4096;

/** Options for the rest of a multi-request call: the caller's timeout spread over all of it. */
function remaining(opts: RequestOptions | undefined, deadline: number | undefined, what: string, path: string): RequestOptions | undefined {
  if (deadline === undefined) return opts;
  const left = deadline - Date.now();
  if (left <= 0)
    throw new XenstoreError('XS_TIMEOUT', `xenstore ${what} ${path}: no complete answer within ${opts!.timeoutMs} ms`, { path });
  return { ...opts, timeoutMs: left };
}

/**
 * The xenstore operations, shared by the connection (tx_id 0) and by a
 * {@link Transaction}: both are this class with a different `call`.
 */
export abstract class XsOps {
  protected abstract call(type: number, payload: Uint8Array, path: string | undefined, opts?: RequestOptions): Promise<Uint8Array>;

  /** Reads a value as UTF-8. Fails with XS_ENOENT when the node does not exist. */
  async read(path: string, opts?: RequestOptions): Promise<string> {
    return utf8String(await this.call(XsType.Read, joinPayload([path]), path, opts));
  }

  /** Reads a value as raw bytes (a copy: it does not keep the connection's read buffer alive). */
  async readBytes(path: string, opts?: RequestOptions): Promise<Uint8Array> {
    return (await this.call(XsType.Read, joinPayload([path]), path, opts)).slice();
  }

  /** Reads a key that may be absent: undefined instead of XS_ENOENT. */
  async readOptional(path: string, opts?: RequestOptions): Promise<string | undefined> {
    try {
      return await this.read(path, opts);
    } catch (err) {
      if (isXenError(err, 'XS_ENOENT')) return undefined;
      throw err;
    }
  }

  /**
   * Reads a decimal integer (as xenbus_scanf("%d") would). With `fallback`,
   * an absent key gives the fallback; a value that is not an integer is
   * XS_EINVAL either way.
   */
  async readInt(path: string, opts?: RequestOptions & { fallback?: number }): Promise<number> {
    const v = opts?.fallback === undefined ? await this.read(path, opts) : await this.readOptional(path, opts);
    if (v === undefined) return opts!.fallback!;
    const t = v.trim();
    if (!/^-?\d+$/.test(t) || !Number.isSafeInteger(Number(t))) {
      throw new XenstoreError('XS_EINVAL', `xenstore ${path}: "${v}" is not an integer`, { path });
    }
    return Number(t);
  }

  /** Reads a u64 decimal (e.g. a disk's `sectors`) as a bigint. */
  async readBigInt(path: string, opts?: RequestOptions): Promise<bigint> {
    const v = (await this.read(path, opts)).trim();
    if (!/^\d+$/.test(v) || BigInt(v) > 0xffffffffffffffffn) {
      throw new XenstoreError('XS_EINVAL', `xenstore ${path}: "${v}" is not a u64`, { path });
    }
    return BigInt(v);
  }

  /** Reads a feature flag: an integer, non-zero is true. Absent gives `fallback` (default false). */
  async readBool(path: string, opts?: RequestOptions & { fallback?: boolean }): Promise<boolean> {
    const v = await this.readInt(path, { ...opts, fallback: opts?.fallback === true ? 1 : 0 });
    return v !== 0;
  }

  /** True when the node exists (and is readable). */
  async exists(path: string, opts?: RequestOptions): Promise<boolean> {
    return (await this.readOptional(path, opts)) !== undefined;
  }

  /** Writes a value, creating the node and any missing parents. */
  async write(path: string, value: string | Uint8Array, opts?: RequestOptions): Promise<void> {
    await this.call(XsType.Write, joinPayload([path, value], false), path, opts);
  }

  /** Creates a node with an empty value; succeeds if it already exists. */
  async mkdir(path: string, opts?: RequestOptions): Promise<void> {
    await this.call(XsType.Mkdir, joinPayload([path]), path, opts);
  }

  /** Removes a node and everything below it; absent is fine if its parent exists. */
  async rm(path: string, opts?: RequestOptions): Promise<void> {
    await this.call(XsType.Rm, joinPayload([path]), path, opts);
  }

  /**
   * Lists the children's leaf names. Falls back to DIRECTORY_PART when the
   * list does not fit in one reply (E2BIG), as libxenstore does.
   */
  async directory(path: string, opts?: RequestOptions): Promise<string[]> {
    const deadline = opts?.timeoutMs === undefined ? undefined : Date.now() + opts.timeoutMs;
    try {
      return splitPayload(await this.call(XsType.Directory, joinPayload([path]), path, opts));
    } catch (err) {
      if (!isXenError(err, 'XS_E2BIG')) throw err;
      return this.listParts(path, opts, deadline);
    }
  }

  /**
   * DIRECTORY_PART: the children list fetched in byte ranges. Each reply starts
   * with the node's generation; if it changes mid-way the listing restarts.
   * The last part ends with an empty name.
   */
  directoryPart(path: string, opts?: RequestOptions): Promise<string[]> {
    return this.listParts(path, opts, opts?.timeoutMs === undefined ? undefined : Date.now() + opts.timeoutMs);
  }

  /** The caller's timeout (and signal) bound the whole listing, not each part. */
  private async listParts(path: string, opts: RequestOptions | undefined, deadline: number | undefined): Promise<string[]> {
    let parts = 0;
    for (let restart = 0; restart < MAX_DIRECTORY_PART_RESTARTS; restart++) {
      const names: string[] = [];
      let gen: string | undefined;
      let off = 0;
      let changed = false;
      for (;;) {
        if (++parts > MAX_DIRECTORY_PARTS) {
          throw new XenstoreError('XS_EPROTO', `xenstore DIRECTORY_PART ${path}: no end marker after ${MAX_DIRECTORY_PARTS} parts`, {
            path,
          });
        }
        const reply = await this.call(
          XsType.DirectoryPart,
          joinPayload([path, String(off)]),
          path,
          remaining(opts, deadline, 'DIRECTORY_PART', path),
        );
        const genEnd = reply.indexOf(0);
        if (genEnd < 0) throw new XenstoreError('XS_EPROTO', `xenstore DIRECTORY_PART ${path}: reply has no generation`, { path });
        const g = utf8String(reply.subarray(0, genEnd));
        if (gen !== undefined && g !== gen) {
          changed = true;
          break;
        }
        gen = g;
        const rest = reply.subarray(genEnd + 1);
        let start = 0;
        let ended = false;
        for (let i = 0; i < rest.length; i++) {
          if (rest[i] !== 0) continue;
          if (i === start) {
            ended = true; // the empty name that marks the end
            break;
          }
          names.push(utf8String(rest.subarray(start, i)));
          start = i + 1;
        }
        if (ended) return names;
        if (start === 0) throw new XenstoreError('XS_EPROTO', `xenstore DIRECTORY_PART ${path}: empty part without end marker`, { path });
        off += start;
      }
      if (!changed) break;
    }
    throw new XenstoreError('XS_EAGAIN', `xenstore DIRECTORY_PART ${path}: node kept changing`, { path });
  }

  /** The node's permissions: the owner entry first. */
  async getPerms(path: string, opts?: RequestOptions): Promise<XsPerm[]> {
    const reply = await this.call(XsType.GetPerms, joinPayload([path]), path, opts);
    return splitPayload(reply).map((s) => {
      const p = parseXsPerm(s);
      if (!p) throw new XenstoreError('XS_EPROTO', `xenstore GET_PERMS ${path}: bad entry "${s}"`, { path });
      return p;
    });
  }

  /** Replaces the node's permissions. The first entry names the owner and the default. */
  async setPerms(path: string, perms: readonly XsPerm[], opts?: RequestOptions): Promise<void> {
    if (perms.length === 0)
      throw new XenstoreError('XS_EINVAL', `xenstore SET_PERMS ${path}: at least the owner entry is needed`, { path });
    await this.call(XsType.SetPerms, joinPayload([path, ...perms.map(formatXsPerm)]), path, opts);
  }
}

/** Decodes a reply that must be "OK". */
export function expectOk(payload: Uint8Array, what: string): void {
  const s = payloadString(payload);
  if (s !== 'OK') throw new XenstoreError('XS_EPROTO', `xenstore ${what}: expected OK, got "${s}"`);
}
