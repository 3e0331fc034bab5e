/** The in-memory pipe's contract: order, asynchrony, pieces, short writes, close. */
import { describe, expect, it } from 'vitest';
import { createMemoryPipe } from '../../src/transport/memory.js';
import type { ByteStreamHandlers } from '../../src/transport/byte_stream.js';
import { until } from '../helpers/xs.js';

function sink(): { handlers: ByteStreamHandlers; bytes: number[]; pieces: number[]; writable: number; closed: boolean } {
  const s = {
    bytes: [] as number[],
    pieces: [] as number[],
    writable: 0,
    closed: false,
    handlers: {} as ByteStreamHandlers,
  };
  s.handlers = {
    data: (c) => {
      s.bytes.push(...c);
      s.pieces.push(c.length);
    },
    writable: () => void s.writable++,
    closed: () => void (s.closed = true),
  };
  return s;
}

describe('createMemoryPipe', () => {
  it('delivers in order, never inside write(), in pieces no larger than maxChunk', async () => {
    const [a, b] = createMemoryPipe({ maxChunk: 5, seed: 3 });
    const rx = sink();
    a.start(sink().handlers);
    b.start(rx.handlers);
    const data = Uint8Array.from({ length: 300 }, (_, i) => i & 0xff);
    expect(a.write(data.subarray(0, 100))).toBe(100);
    expect(rx.bytes.length).toBe(0); // asynchronous, like a socket
    a.write(data.subarray(100));
    await until(() => rx.bytes.length === 300);
    expect(rx.bytes).toEqual([...data]);
    expect(Math.max(...rx.pieces)).toBeLessThanOrEqual(5);
    expect(new Set(rx.pieces).size).toBeGreaterThan(1);
  });

  it('takes only what fits, then says writable once the reader drained it', async () => {
    const [a, b] = createMemoryPipe({ writeCapacity: 10 });
    const tx = sink();
    const rx = sink();
    a.start(tx.handlers);
    b.start(rx.handlers);
    expect(a.write(new Uint8Array(25))).toBe(10);
    expect(a.write(new Uint8Array(5))).toBe(0);
    await until(() => tx.writable === 1);
    expect(rx.bytes.length).toBe(10);
    expect(a.write(new Uint8Array(15))).toBe(10);
  });

  it('reports close to both ends, after the bytes already sent', async () => {
    const [a, b] = createMemoryPipe();
    const ra = sink();
    const rb = sink();
    a.start(ra.handlers);
    b.start(rb.handlers);
    a.write(new Uint8Array([1, 2, 3]));
    a.close();
    await until(() => ra.closed && rb.closed);
    expect(rb.bytes).toEqual([1, 2, 3]);
    expect(a.write(new Uint8Array([4]))).toBe(0);
    expect(b.write(new Uint8Array([4]))).toBe(0);
  });
});
