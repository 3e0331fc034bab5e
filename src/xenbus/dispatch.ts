/**
 * Dispatch groups for watch callbacks. Each group is a serial queue: its
 * callbacks run one at a time, in arrival order, each awaited before the
 * next. Groups are independent, so a callback that stalls holds up only its
 * own group, never another group and never the reader that matches replies.
 */
import { SerialQueue, type Task } from '../util/serial.js';

/**
 * The set of named groups. A group exists while it has work: it is created
 * when a task arrives for it and dropped when its queue drains, so groups
 * named after short-lived things (one per state wait, per iterator) do not
 * accumulate.
 */
export class DispatchGroups {
  private readonly groups = new Map<string, SerialQueue>();

  constructor(private readonly onError: (err: unknown, group: string) => void) {}

  run(group: string, task: Task): void {
    let q = this.groups.get(group);
    if (!q) {
      const created: SerialQueue = new SerialQueue(
        (err) => this.onError(err, group),
        () => {
          if (this.groups.get(group) === created) this.groups.delete(group);
        },
      );
      q = created;
      this.groups.set(group, q);
    }
    q.push(task);
  }

  /** Groups that have work now. */
  get size(): number {
    return this.groups.size;
  }

  /** Tasks waiting per group (for stats and tests). */
  backlog(): Record<string, number> {
    return Object.fromEntries([...this.groups].map(([k, q]) => [k, q.pending]));
  }
}
