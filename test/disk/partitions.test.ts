import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { join } from 'node:path';
import { readFileSync, truncateSync } from 'node:fs';
import { openPartition, readPartitionTable, Partition, PartitionError, isXenError } from '../../src/index.js';
import { MemoryTarget, blankImage, run, scratch, sfdiskJson } from '../helpers/images.js';
import { diskFixture, rng } from '../helpers/blk.js';

/** Inverts one byte of the image (a damaged field). */
const flip = (t: MemoryTarget, at: number): void => {
  t.bytes[at] = t.bytes[at]! ^ 0xff;
};

const EXTENDED = new Set(['5', 'f', '85']);
/** Byte ranges [start, length] that hold table fields: MBR entries and signature, GPT header, GPT entries 1–4. */
const REGIONS: Array<[number, number]> = [
  [446, 66],
  [512, 92],
  [1024, 512],
];

describe('partition tables against util-linux and gdisk', () => {
  const tmp = scratch();
  const mbr = join(tmp.dir, 'mbr.img');
  const gpt = join(tmp.dir, 'gpt.img');
  beforeAll(() => {
    blankImage(mbr, 32 << 20);
    // Two primaries, an extended partition holding two logical ones.
    run(
      'sfdisk',
      ['-q', mbr],
      'label: dos\nlabel-id: 0x1234abcd\nstart=2048, size=16384, type=83, bootable\n' +
        'start=18432, size=8192, type=82\nstart=26624, type=5\nsize=4096, type=83\nsize=4096, type=8e\n',
    );
    blankImage(gpt, 32 << 20);
    run('sgdisk', [
      '-n',
      '1:2048:+16M',
      '-t',
      '1:8300',
      '-c',
      '1:root fs',
      '-n',
      '2:0:+8M',
      '-t',
      '2:ef00',
      '-c',
      '2:esp',
      '-n',
      '4:0:0',
      '-t',
      '4:8200',
      gpt,
    ]);
  });
  afterAll(() => tmp.remove());

  it('MBR with logical partitions: the same partitions, numbers, bounds and types as sfdisk --json', async () => {
    const table = await readPartitionTable(MemoryTarget.fromFile(mbr));
    const ref = sfdiskJson(mbr);
    expect(table.kind).toBe('mbr');
    expect(`0x${table.id}`).toBe(ref.id);
    const want = ref.partitions
      .filter((p) => !EXTENDED.has(p.type))
      .map((p) => ({
        number: Number(/(\d+)$/.exec(p.node)![1]),
        offset: p.start * 512,
        size: p.size * 512,
        type: p.type.padStart(2, '0'),
      }));
    expect(table.partitions.map((p) => ({ number: p.number, offset: p.offset, size: p.size, type: p.type }))).toEqual(want);
    expect(want.map((p) => p.number)).toEqual([1, 2, 5, 6]);
    expect(table.partitions[0]!.bootable).toBe(true);
    expect(table.partitions[0]!.uuid).toBe('1234abcd-01');
  });

  it('GPT: the same partitions, type GUIDs, partition GUIDs and names as sfdisk --json (entry 3 left empty)', async () => {
    const table = await readPartitionTable(MemoryTarget.fromFile(gpt));
    const ref = sfdiskJson(gpt);
    expect(table.kind).toBe('gpt');
    expect(table.id).toBe(ref.id);
    expect(table.warnings).toEqual([]);
    expect(
      table.partitions.map((p) => ({
        node: `${gpt}${p.number}`,
        start: p.offset / 512,
        size: p.size / 512,
        type: p.type,
        uuid: p.uuid,
        ...(p.name ? { name: p.name } : {}),
      })),
    ).toEqual(ref.partitions.map((p) => ({ ...p, node: p.node })));
    expect(table.partitions.map((p) => [p.number, p.typeName])).toEqual([
      [1, 'Linux filesystem'],
      [2, 'EFI System'],
      [4, 'Linux swap'],
    ]);
  });

  it('GPT whose primary header is broken: the backup at the last LBA is used, with a warning; both broken: PART_EBADTABLE', async () => {
    const t = MemoryTarget.fromFile(gpt);
    flip(t, 512 + 40); // first-usable LBA: the header CRC no longer matches
    const table = await readPartitionTable(t);
    expect(table.partitions.map((p) => p.number)).toEqual([1, 2, 4]);
    expect(table.warnings.join()).toMatch(/primary GPT unusable \(header CRC mismatch/);
    flip(t, t.size - 512 + 40);
    await expect(readPartitionTable(t)).rejects.toMatchObject({ code: 'PART_EBADTABLE' });
    // Entries corrupted (header fine): the entry-array CRC catches it, the backup's copy is used.
    const u = MemoryTarget.fromFile(gpt);
    flip(u, 1024 + 60);
    expect((await readPartitionTable(u)).warnings.join()).toMatch(/entry array CRC mismatch/);
  });

  it('no table: PART_ENOTABLE; overlapping entries: PART_EBADTABLE; a looping logical chain: PART_EBADTABLE', async () => {
    await expect(readPartitionTable(new MemoryTarget(1 << 20))).rejects.toMatchObject({ code: 'PART_ENOTABLE' });
    const ov = MemoryTarget.fromFile(mbr);
    new DataView(ov.bytes.buffer).setUint32(446 + 16 + 8, 2048 + 100, true); // entry 2 starts inside entry 1
    ov.bytes[446 + 16 + 4] = 0x83;
    await expect(readPartitionTable(ov)).rejects.toMatchObject({ code: 'PART_EBADTABLE', message: expect.stringMatching(/overlap/) });
    const loop = MemoryTarget.fromFile(mbr);
    const ebr2 = (26624 + 4096 + 2048) * 512; // sfdisk leaves 2048 sectors before each logical partition
    const second = readFileSync(mbr).subarray(ebr2, ebr2 + 512);
    expect(second[510]).toBe(0x55);
    new DataView(loop.bytes.buffer).setUint32(ebr2 + 462 + 8, ebr2 / 512 - 26624, true); // the second EBR links to itself
    loop.bytes[ebr2 + 462 + 4] = 0x05;
    await expect(readPartitionTable(loop)).rejects.toMatchObject({ code: 'PART_EBADTABLE' });
  });

  it('a partition past the end of the disk is listed with a warning and refused as a view (PART_ERANGE); the others stay usable', async () => {
    const cut = join(tmp.dir, 'cut.img');
    blankImage(cut, 32 << 20);
    run('sfdisk', ['-q', cut], 'label: dos\nstart=2048, size=8192, type=83\nstart=10240, size=40000, type=83\n');
    truncateSync(cut, 16 << 20);
    const t = MemoryTarget.fromFile(cut);
    const table = await readPartitionTable(t);
    expect(table.warnings.join()).toMatch(/partition 2 ends at byte .* past the end of the disk/);
    await expect(openPartition(t, 2)).rejects.toMatchObject({ code: 'PART_ERANGE' });
    expect((await openPartition(t, 1)).size).toBe(8192 * 512);
    await expect(openPartition(t, 3)).rejects.toMatchObject({ code: 'PART_ENOENT', message: expect.stringMatching(/has: 1, 2/) });
  });

  it('fed damaged tables: every outcome is a table or a typed PartitionError, never anything else', async () => {
    const raw = rng(20261130);
    const next = (): number => raw() / 2 ** 32;
    const outcomes = new Map<string, number>();
    for (const src of [mbr, gpt]) {
      const base = readFileSync(src);
      const t = new MemoryTarget(new Uint8Array(base));
      for (let i = 0; i < 300; i++) {
        t.bytes.set(base.subarray(0, 34 * 512)); // undo the last round's damage
        // Damage 1–8 bytes where the tables are: the MBR's entries, the GPT header, the first entries.
        for (let k = 0, n = 1 + Math.floor(next() * 8); k < n; k++) {
          const [from, len] = REGIONS[Math.floor(next() * REGIONS.length)]!;
          t.bytes[from + Math.floor(next() * len)] = Math.floor(next() * 256);
        }
        let outcome: string;
        try {
          const table = await readPartitionTable(t);
          for (const p of table.partitions) {
            if (p.offset + p.size <= t.size) expect(new Partition(t, p).size).toBe(p.size);
          }
          outcome = 'table';
        } catch (err) {
          expect(err).toBeInstanceOf(PartitionError);
          outcome = (err as PartitionError).code;
        }
        outcomes.set(outcome, (outcomes.get(outcome) ?? 0) + 1);
      }
    }
    console.log(`damaged tables: ${[...outcomes].map(([k, v]) => `${k} ${v}`).join(', ')}`);
    expect(outcomes.get('table')).toBeGreaterThan(0);
  });
});

describe('a partition as a view, through the driver', () => {
  it('I/O is relative to its start, and past its end refused before anything is sent; neighbours untouched', async () => {
    const tmp = scratch();
    const img = join(tmp.dir, 'gpt.img');
    blankImage(img, 8 << 20);
    run('sgdisk', ['-n', '1:2048:+2M', '-n', '2:0:+2M', img]);
    const fx = await diskFixture({ image: img });
    try {
      const p1 = await openPartition(fx.dev, 1);
      const p2 = await openPartition(fx.dev, 2);
      expect(p1.entry.offset).toBe(2048 * 512);
      const before2 = new Uint8Array(p2.size);
      await p2.readInto(0, before2);
      const data = new Uint8Array(p1.size).fill(0xa5);
      await p1.write(0, data);
      const requests = fx.dev.stats().requests;
      await expect(p1.write(p1.size - 512, new Uint8Array(1024))).rejects.toMatchObject({ code: 'BLKIF_ERANGE' });
      await expect(p1.readInto(p1.size, new Uint8Array(512))).rejects.toMatchObject({ code: 'BLKIF_ERANGE' });
      await expect(p1.discard(-512, 512)).rejects.toMatchObject({ code: 'BLKIF_ERANGE' });
      expect(fx.dev.stats().requests).toBe(requests);
      const after2 = new Uint8Array(p2.size);
      await p2.readInto(0, after2);
      expect(Buffer.compare(after2, before2)).toBe(0);
      const whole = readFileSync(img);
      expect(whole.subarray(2048 * 512, 2048 * 512 + p1.size).every((b) => b === 0xa5)).toBe(true);
      expect(whole[2048 * 512 - 1]).not.toBe(0xa5);
      // The table itself survived.
      expect((await readPartitionTable(fx.dev)).partitions.length).toBe(2);
      expect(isXenError(await p1.readInto(0, new Uint8Array(3)).catch((e: unknown) => e))).toBe(true);
    } finally {
      await fx.close();
      tmp.remove();
    }
  });
});
