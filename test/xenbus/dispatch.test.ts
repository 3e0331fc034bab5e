import { describe, expect, it } from 'vitest';
import { DispatchGroups } from '../../src/xenbus/dispatch.js';
import { deferred, until } from '../helpers/xs.js';

describe('DispatchGroups', () => {
  it('runs a group in order, one at a time, and others independently', async () => {
    const errors: [unknown, string][] = [];
    const g = new DispatchGroups((e, name) => void errors.push([e, name]));
    const gate = deferred();
    const order: string[] = [];
    g.run('a', async () => {
      order.push('a1');
      await gate.promise;
    });
    g.run('a', () => void order.push('a2'));
    g.run('b', () => void order.push('b1'));
    g.run('b', () => {
      throw new Error('b2 broke');
    });
    g.run('b', () => void order.push('b3'));
    await until(() => order.includes('b3'));
    expect(order).toEqual(['a1', 'b1', 'b3']);
    expect(g.backlog()).toEqual({ a: 1 });
    expect(errors.map(([e, n]) => [(e as Error).message, n])).toEqual([['b2 broke', 'b']]);
    gate.resolve();
    await until(() => order.includes('a2'));
    expect(order).toEqual(['a1', 'b1', 'b3', 'a2']);
  });

  it('drops a group once it has drained, so short-lived names do not pile up', async () => {
    const g = new DispatchGroups(() => undefined);
    let done = 0;
    for (let i = 0; i < 1000; i++) g.run(`state:/dev/${i}`, async () => void done++);
    expect(g.size).toBe(1000);
    await until(() => done === 1000 && g.size === 0);
    // A name used again gets a fresh queue.
    g.run('state:/dev/1', () => void done++);
    await until(() => done === 1001 && g.size === 0);
  });
});
