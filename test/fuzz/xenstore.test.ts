/**
 * Property suite for xenstore, both directions, seeded (the seed is printed;
 * FUZZ_SEED replays it) and bounded:
 * - the client against a daemon stand-in that answers with anything (right
 *   replies, wrong types, unknown ids, errors, garbage, oversized headers,
 *   stray watch events, silence, hang-ups), delivered in random pieces:
 *   every request settles, with a value or a XenstoreError, and nothing is
 *   thrown anywhere else;
 * - the simulated xenstored against a guest sending anything: every request
 *   is answered or the guest is dropped, dom0's private node is never read
 *   or changed by the guest, and dom0 is still served at the end.
 */
import { describe, expect, it } from 'vitest';
import { XenError, XenstoreClient } from '../../src/index.js';
import { SimXenstored } from '../../src/sim/xenstored/server.js';
import { createMemoryPipe } from '../../src/transport/memory.js';
import { XsFrameParser } from '../../src/wire/xs_parser.js';
import { XENSTORE_PAYLOAD_MAX, XsType, encodeHeader, encodeMessage, joinPayload, type XsMessage } from '../../src/wire/xs_wire.js';
import { fuzz, type Fuzz } from '../helpers/fuzz.js';
import { until } from '../helpers/xs.js';

const ERRNOS = ['ENOENT', 'EACCES', 'EAGAIN', 'E2BIG', 'EINVAL', 'EWHAT', ''];
const SEGMENTS = ['a', 'b', 'data', 'device', 'vbd', '51712', 'state', '..', '', 'x'.repeat(300), 'é', '@introduceDomain', 'a b', '*'];

function randomPath(f: Fuzz): string {
  const n = 1 + f.int(5);
  const parts = Array.from({ length: n }, () => f.pick(SEGMENTS));
  return (f.chance(0.5) ? '/' : '') + parts.join('/');
}

function randomPayload(f: Fuzz): Uint8Array {
  switch (f.int(5)) {
    case 0:
      return joinPayload([randomPath(f)]);
    case 1:
      return joinPayload([randomPath(f), `v${f.int(100)}`], false);
    case 2:
      return joinPayload([randomPath(f), 't'.repeat(f.chance(0.1) ? 4100 : f.int(4000))]);
    case 3:
      return f.bytes(f.int(64));
    default:
      return joinPayload(Array.from({ length: f.int(6) }, () => f.pick(SEGMENTS)));
  }
}

function frame(type: number, reqId: number, txId: number, payload: Uint8Array): Uint8Array {
  if (payload.length <= XENSTORE_PAYLOAD_MAX) return encodeMessage(type, reqId, txId, payload);
  const f = new Uint8Array(16 + payload.length);
  encodeHeader(f, 0, { type, reqId, txId, len: payload.length });
  f.set(payload, 16);
  return f;
}

describe('fuzz: the client against a daemon that answers anything', () => {
  it('every request settles with a value or a XenstoreError', async () => {
    const f = fuzz('xenstore client');
    for (const c of f.cases(400, 6000)) {
      const [clientEnd, serverEnd] = createMemoryPipe({ maxChunk: 1 + f.int(40), seed: f.int(1000) + 1 });
      const client = new XenstoreClient(clientEnd, { defaultTimeoutMs: 60 });
      const parser = new XsFrameParser();
      const requests: XsMessage[] = [];
      let hungUp = false;
      const answer = (m: XsMessage): void => {
        f.tally.add('requests seen');
        const send = (b: Uint8Array): void => {
          f.tally.add('frames sent');
          serverEnd.write(b);
        };
        switch (f.int(12)) {
          case 0:
            return; // silence
          case 1:
            return send(frame(XsType.Error, m.reqId, m.txId, joinPayload([f.pick(ERRNOS)])));
          case 2:
            return send(frame(f.int(30), m.reqId, m.txId, randomPayload(f))); // any type
          case 3:
            return send(frame(m.type, f.int(5) === 0 ? 0 : m.reqId + 1 + f.int(3), m.txId, randomPayload(f))); // someone else's id
          case 4:
            return send(f.bytes(1 + f.int(40))); // garbage
          case 5: {
            const h = new Uint8Array(16);
            encodeHeader(h, 0, { type: m.type, reqId: m.reqId, txId: 0, len: XENSTORE_PAYLOAD_MAX + 1 + f.int(1 << 20) });
            return send(h);
          }
          case 6:
            return send(frame(XsType.WatchEvent, 0, 0, joinPayload([randomPath(f), `xb${f.int(9)}-${f.int(9)}`])));
          case 7:
            hungUp = true;
            serverEnd.close();
            return;
          case 8:
            return send(frame(XsType.DirectoryPart, m.reqId, m.txId, joinPayload([String(f.int(3)), 'n'])));
          default: // a right reply of the right type
            return send(
              frame(
                m.type,
                m.reqId,
                m.txId,
                m.type === XsType.TransactionStart
                  ? joinPayload([String(1 + f.int(5))])
                  : m.type === XsType.Watch || m.type === XsType.Unwatch || m.type === XsType.Write
                    ? joinPayload(['OK'])
                    : randomPayload(f),
              ),
            );
        }
      };
      serverEnd.start({
        data: (chunk) => {
          parser.push(chunk);
          for (let r = parser.next(); r.kind === 'message' && !hungUp; r = parser.next()) {
            requests.push(r.message);
            answer(r.message);
          }
        },
        writable: () => undefined,
        closed: () => undefined,
      });
      const calls: Array<Promise<unknown>> = [];
      for (let i = 0, n = 1 + f.int(8); i < n; i++) {
        const path = randomPath(f);
        switch (f.int(7)) {
          case 0:
            calls.push(client.read(path));
            break;
          case 1:
            calls.push(client.write(path, `v${i}`));
            break;
          case 2:
            calls.push(client.directory(path));
            break;
          case 3:
            calls.push(client.watch(path, () => undefined));
            break;
          case 4:
            calls.push(client.transaction(async (tx) => tx.read(path), { maxAttempts: 2, backoffMs: 1 }));
            break;
          case 5:
            calls.push(client.readInt(path, { fallback: 3 }));
            break;
          default:
            calls.push(client.getPerms(path));
            break;
        }
      }
      const results = await Promise.allSettled(
        calls.map((p) => Promise.race([p, new Promise((_, rej) => setTimeout(() => rej(new Error('HANG')), 3000))])),
      );
      for (const r of results) {
        if (r.status === 'fulfilled') f.tally.add('resolved');
        else {
          expect(r.reason, `seed ${f.seed}, case ${c}: ${String(r.reason)}`).toBeInstanceOf(XenError);
          f.tally.add(`rejected ${(r.reason as XenError).code}`);
        }
      }
      client.close();
      serverEnd.close();
    }
    f.report('cases', 'resolved', 'rejected XS_EPROTO', 'rejected XS_TIMEOUT');
  }, 30_000);
});

describe('fuzz: the simulated xenstored against a guest that sends anything', () => {
  it("answers or drops the guest, never lets it near dom0's node, and keeps serving dom0", async () => {
    const f = fuzz('simulated xenstored');
    const sim = new SimXenstored();
    const dom0 = new XenstoreClient(sim.connect());
    await dom0.write('/local/domain/0/secret', 'dom0 only');
    await dom0.mkdir('/local/domain/7');
    await dom0.setPerms('/local/domain/7', [{ perm: 'n', domid: 7 }]);
    sim.introduceDomain(7);
    for (const c of f.cases(60, 6000)) {
      const [guestEnd, serverEnd] = createMemoryPipe({}, { maxChunk: 1 + f.int(64), seed: c });
      sim.serve(serverEnd, { domid: 7 });
      const parser = new XsFrameParser();
      let replies = 0;
      let closed = false;
      guestEnd.start({
        data: (c) => {
          parser.push(c);
          for (let r = parser.next(); r.kind === 'message'; r = parser.next()) {
            if (r.message.type !== XsType.WatchEvent) replies++;
            // No reply ever carries dom0's secret.
            expect(new TextDecoder().decode(r.message.payload)).not.toContain('dom0 only');
          }
        },
        writable: () => undefined,
        closed: () => void (closed = true),
      });
      let sent = 0;
      for (let i = 0, n = 1 + f.int(40); i < n && !closed; i++) {
        const type = f.chance(0.85) ? f.pick([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 17, 18, 19, 21, 22]) : f.int(40);
        const payload = f.chance(0.1) ? joinPayload(['/local/domain/0/secret', 'stolen'], false) : randomPayload(f);
        const txId = f.chance(0.7) ? 0 : f.int(4);
        if (f.chance(0.02)) {
          const h = new Uint8Array(16);
          encodeHeader(h, 0, { type, reqId: i + 1, txId, len: XENSTORE_PAYLOAD_MAX + 1 });
          guestEnd.write(h);
          f.tally.add('oversized frames');
        } else {
          guestEnd.write(frame(type, i + 1, txId, payload));
          if (payload.length <= XENSTORE_PAYLOAD_MAX) sent++;
        }
        f.tally.add('frames');
      }
      // Every request answered, or the guest dropped (an oversized frame).
      await until(() => closed || replies >= sent, 5000);
      f.tally.add(closed ? 'guest dropped' : 'all answered');
      guestEnd.close();
    }
    expect(await dom0.read('/local/domain/0/secret')).toBe('dom0 only');
    await dom0.write('/still/served', 'yes');
    f.report(`guests, daemon ${JSON.stringify(sim.stats())}`, 'all answered', 'guest dropped');
    dom0.close();
    sim.close();
  }, 30_000);
});
