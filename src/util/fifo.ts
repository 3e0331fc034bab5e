/**
 * A first-in first-out queue over an array with a moving head: push and
 * shift are O(1) and allocate nothing in the steady state, unlike
 * Array#shift, which moves every element. Taken slots are cleared at once
 * (nothing stays reachable through the queue) and the array is compacted
 * when the dead prefix outgrows the live part.
 */

/** Dead slots tolerated before a compaction is considered. */
const COMPACT_AFTER = 64;

export class Fifo<T> {
  private items: Array<T | undefined> = [];
  private head = 0;

  /** Items queued. */
  get length(): number {
    return this.items.length - this.head;
  }

  push(item: T): void {
    this.items.push(item);
  }

  /** The oldest item, left in place; undefined when empty. */
  peek(): T | undefined {
    // Checked first: a read past the end of an array takes V8's slow path.
    return this.head < this.items.length ? this.items[this.head] : undefined;
  }

  /** Takes the oldest item; undefined when empty. */
  shift(): T | undefined {
    if (this.head === this.items.length) return undefined;
    const item = this.items[this.head];
    this.items[this.head++] = undefined;
    if (this.head === this.items.length) this.reset();
    else if (this.head > COMPACT_AFTER && this.head * 2 > this.items.length) {
      this.items.splice(0, this.head);
      this.head = 0;
    }
    return item;
  }

  /** Removes `item` wherever it is in the queue; false when it is not there. */
  remove(item: T): boolean {
    const i = this.items.indexOf(item, this.head);
    if (i < 0) return false;
    this.items.splice(i, 1);
    if (this.head === this.items.length) this.reset();
    return true;
  }

  /** Takes every item, oldest first, and leaves the queue empty. */
  drain(): T[] {
    const out = this.items.slice(this.head) as T[];
    this.reset();
    return out;
  }

  /** Empties the queue. */
  clear(): void {
    this.reset();
  }

  *[Symbol.iterator](): IterableIterator<T> {
    for (let i = this.head; i < this.items.length; i++) yield this.items[i] as T;
  }

  private reset(): void {
    this.items.length = 0;
    this.head = 0;
  }
}
