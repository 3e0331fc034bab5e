/**
 * MBR and GPT partition tables, read from a {@link BlockTarget}, and each
 * partition as a view of its own: a {@link Partition} is a BlockTarget whose
 * I/O is checked against the partition's bounds before it reaches the disk.
 *
 * The layouts are the UEFI specification's (GPT header at LBA 1, entries
 * behind it, a backup header at the last LBA, both CRC32-checked) and the
 * PC BIOS one (four entries at byte 446, 0x55AA at 510, logical partitions
 * chained through extended boot records, numbered from 5 as Linux does).
 * Nothing in a table is trusted: every entry is checked against the disk's
 * size and against the others before a view is made of it.
 */
import { crc32 } from 'node:zlib';
import { BlkifError, PartitionError } from '../errors.js';
import type { BlockTarget } from '../blkfront/target.js';
import { readRangeInto } from './range.js';
import {
  GPT_ATTR_LEGACY_BOOTABLE,
  GPT_ENTRY_MIN_SIZE,
  GPT_HEADER_MIN_SIZE,
  GPT_NAME_UNITS,
  GPT_SIGNATURE,
  GptEntryOffset as GE,
  GptHeaderOffset as H,
  MBR_BOOTABLE,
  MBR_ENTRIES,
  MBR_ENTRY_SIZE,
  MBR_SIGNATURE,
  MBR_SIZE,
  MBR_TYPES_EXTENDED,
  MBR_TYPE_GPT_PROTECTIVE,
  MbrEntryOffset as E,
  MbrOffset,
  decodeGuid,
} from '../wire/partition_table.js';

/** One partition, as its table describes it. */
export interface PartitionEntry {
  /** 1-based, as Linux names it (xvda1): GPT entry index + 1; MBR 1–4 primary, 5… logical. */
  readonly number: number;
  /** First byte on the disk. */
  readonly offset: number;
  /** Length in bytes. */
  readonly size: number;
  /** GPT type GUID (upper case) or MBR type byte as two hex digits ("83"). */
  readonly type: string;
  /** A name for the type when it is a common one ("Linux filesystem", "EFI System"), else "". */
  readonly typeName: string;
  /** GPT partition GUID; MBR: disk signature and number ("1234abcd-01"), as blkid's PARTUUID. */
  readonly uuid: string;
  /** GPT partition name; "" for MBR. */
  readonly name: string;
  /** MBR: the bootable flag; GPT: attribute bit 2 (legacy BIOS bootable). */
  readonly bootable: boolean;
}

/** A disk's table. */
export interface PartitionTable {
  readonly kind: 'mbr' | 'gpt';
  /** GPT disk GUID, or the MBR disk signature as 8 hex digits. */
  readonly id: string;
  readonly partitions: readonly PartitionEntry[];
  /** What was noticed and survived (a GPT whose primary header was broken and the backup used). */
  readonly warnings: readonly string[];
}

const GPT_TYPES: Record<string, string> = {
  '0FC63DAF-8483-4772-8E79-3D69D8477DE4': 'Linux filesystem',
  'C12A7328-F81F-11D2-BA4B-00A0C93EC93B': 'EFI System',
  '21686148-6449-6E6F-744E-656564454649': 'BIOS boot',
  '0657FD6D-A4AB-43C4-84E5-0933C84B4F4F': 'Linux swap',
  'E6D6D379-F507-44C2-A23C-238F2A3DF928': 'Linux LVM',
  'A19D880F-05FC-4D3B-A006-743F0F84911E': 'Linux RAID',
  'EBD0A0A2-B9E5-4433-87C0-68B6B72699C7': 'Microsoft basic data',
  '4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709': 'Linux root (x86-64)',
};
const MBR_TYPES: Record<string, string> = {
  '83': 'Linux',
  '82': 'Linux swap',
  '8e': 'Linux LVM',
  fd: 'Linux raid autodetect',
  ef: 'EFI (FAT-12/16/32)',
  '0c': 'W95 FAT32 (LBA)',
  '0b': 'W95 FAT32',
  '07': 'HPFS/NTFS/exFAT',
  '05': 'Extended',
  '0f': "W95 Ext'd (LBA)",
  '85': 'Linux extended',
};
/** Logical partitions followed before the chain is called a loop. */
const MAX_LOGICAL = 128;
/** Largest GPT entry array read (Linux's limit is the same order: 128 entries × 128 bytes is usual). */
const MAX_GPT_ENTRY_BYTES = 4 << 20;

async function readBytes(disk: BlockTarget, offset: number, length: number): Promise<Uint8Array> {
  const end = Math.ceil((offset + length) / disk.sectorSize) * disk.sectorSize;
  if (end > disk.size)
    throw new PartitionError('PART_EBADTABLE', `the table points past the end of the disk (byte ${offset + length} of ${disk.size})`);
  const buf = new Uint8Array(length);
  await readRangeInto(disk, offset, buf);
  return buf;
}

/**
 * Reads the partition table of `disk`: GPT when a protective MBR (type 0xEE)
 * is there, else MBR. PART_ENOTABLE when there is neither, PART_EBADTABLE
 * when one is there but broken (both GPT headers failing their CRC, entries
 * overlapping, an extended chain that loops). An entry that reaches past the
 * end of the disk is listed with a warning; {@link openPartition} refuses it
 * with PART_ERANGE.
 */
export async function readPartitionTable(disk: BlockTarget): Promise<PartitionTable> {
  if (disk.size < 1024) throw new PartitionError('PART_ENOTABLE', 'the disk is too small to hold a partition table');
  const mbr = await readBytes(disk, 0, MBR_SIZE);
  const dv = new DataView(mbr.buffer, mbr.byteOffset, MBR_SIZE);
  const hasMbr = signed(mbr);
  const protective = hasMbr && [0, 1, 2, 3].some((i) => mbr[entryAt(i) + E.type] === MBR_TYPE_GPT_PROTECTIVE);
  if (protective) return readGpt(disk);
  if (!hasMbr) {
    // A GPT without its protective MBR is still a GPT (sgdisk -z leaves none, some tools too).
    const hdr = await readBytes(disk, disk.sectorSize, GPT_SIGNATURE.length);
    if (Buffer.from(hdr).toString('latin1') === GPT_SIGNATURE) return readGpt(disk);
    throw new PartitionError('PART_ENOTABLE', 'no partition table: no MBR signature and no GPT header');
  }
  const signature = dv.getUint32(MbrOffset.diskSignature, true).toString(16).padStart(8, '0');
  const ss = disk.sectorSize;
  const parts: PartitionEntry[] = [];
  let extended: { start: number; size: number } | null = null;
  for (let i = 0; i < MBR_ENTRIES; i++) {
    const e = entryAt(i);
    const type = mbr[e + E.type]!;
    const lba = dv.getUint32(e + E.firstLba, true);
    const count = dv.getUint32(e + E.sectors, true);
    const flag = mbr[e + E.bootFlag]!;
    if (type === 0 || count === 0) continue;
    if (flag !== 0 && flag !== MBR_BOOTABLE)
      throw new PartitionError('PART_EBADTABLE', `MBR entry ${i + 1}: boot flag 0x${flag.toString(16)} is neither 0 nor 0x80`);
    if (MBR_TYPES_EXTENDED.has(type)) {
      if (extended !== null) throw new PartitionError('PART_EBADTABLE', 'MBR: more than one extended partition');
      extended = { start: lba, size: count };
      if ((lba + count) * ss > disk.size)
        throw new PartitionError('PART_ERANGE', `the extended partition ${i + 1} reaches past the end of the disk`);
      continue;
    }
    parts.push(mbrEntry(i + 1, lba * ss, count * ss, type, signature, flag === MBR_BOOTABLE));
  }
  if (extended !== null) {
    // Each EBR: entry 0 is the logical partition (relative to this EBR), entry 1 links to the next EBR (relative to the extended partition).
    let ebr = extended.start;
    const seen = new Set<number>();
    for (let n = 5; ; n++) {
      if (seen.has(ebr) || seen.size >= MAX_LOGICAL)
        throw new PartitionError('PART_EBADTABLE', 'MBR: the chain of logical partitions loops');
      seen.add(ebr);
      const b = await readBytes(disk, ebr * ss, MBR_SIZE);
      if (!signed(b)) throw new PartitionError('PART_EBADTABLE', `MBR: extended boot record at sector ${ebr} has no signature`);
      const v = new DataView(b.buffer, b.byteOffset, MBR_SIZE);
      const type = b[entryAt(0) + E.type]!;
      const rel = v.getUint32(entryAt(0) + E.firstLba, true);
      const count = v.getUint32(entryAt(0) + E.sectors, true);
      if (type !== 0 && count !== 0) {
        const start = ebr + rel;
        if (start < extended.start || start + count > extended.start + extended.size) {
          throw new PartitionError('PART_EBADTABLE', `MBR: logical partition ${n} lies outside its extended partition`);
        }
        parts.push(mbrEntry(n, start * ss, count * ss, type, signature, b[entryAt(0) + E.bootFlag] === MBR_BOOTABLE));
      }
      const nextType = b[entryAt(1) + E.type]!;
      const next = v.getUint32(entryAt(1) + E.firstLba, true);
      if (nextType === 0 || next === 0) break;
      ebr = extended.start + next;
    }
  }
  checkOverlaps(parts);
  return { kind: 'mbr', id: signature, partitions: parts, warnings: pastEnd(disk, parts) };
}

/** Byte offset of MBR (or EBR) entry `i`. */
const entryAt = (i: number): number => MbrOffset.entries + i * MBR_ENTRY_SIZE;
const signed = (b: Uint8Array): boolean => b[MbrOffset.signature] === MBR_SIGNATURE[0] && b[MbrOffset.signature + 1] === MBR_SIGNATURE[1];

function mbrEntry(number: number, offset: number, size: number, typeByte: number, signature: string, bootable: boolean): PartitionEntry {
  const type = typeByte.toString(16).padStart(2, '0');
  return {
    number,
    offset,
    size,
    type,
    typeName: MBR_TYPES[type] ?? '',
    uuid: `${signature}-${number.toString(16).padStart(2, '0')}`,
    name: '',
    bootable,
  };
}

/** Entries past the disk's end stay listed (the others are still usable), each with a warning; a view of one is refused. */
function pastEnd(disk: BlockTarget, parts: readonly PartitionEntry[]): string[] {
  return parts
    .filter((p) => p.offset + p.size > disk.size)
    .map((p) => `partition ${p.number} ends at byte ${p.offset + p.size}, past the end of the disk (${disk.size} bytes)`);
}

function checkInside(disk: BlockTarget, number: number, offset: number, size: number): void {
  if (offset + size > disk.size) {
    throw new PartitionError(
      'PART_ERANGE',
      `partition ${number} ends at byte ${offset + size}, past the end of the disk (${disk.size} bytes)`,
    );
  }
}

function checkOverlaps(parts: readonly PartitionEntry[]): void {
  const sorted = [...parts].sort((a, b) => a.offset - b.offset);
  for (let i = 1; i < sorted.length; i++) {
    const a = sorted[i - 1]!;
    const b = sorted[i]!;
    if (b.offset < a.offset + a.size) throw new PartitionError('PART_EBADTABLE', `partitions ${a.number} and ${b.number} overlap`);
  }
}

interface GptHeader {
  entriesLba: number;
  count: number;
  entrySize: number;
  entriesCrc: number;
  firstUsable: number;
  lastUsable: number;
  diskGuid: string;
}

async function gptHeader(disk: BlockTarget, lba: number): Promise<GptHeader | string> {
  const ss = disk.sectorSize;
  if ((lba + 1) * ss > disk.size) return `header LBA ${lba} is past the end of the disk`;
  const b = await readBytes(disk, lba * ss, ss);
  const v = new DataView(b.buffer, b.byteOffset, b.byteLength);
  if (Buffer.from(b.subarray(0, GPT_SIGNATURE.length)).toString('latin1') !== GPT_SIGNATURE) return `no GPT signature at LBA ${lba}`;
  const size = v.getUint32(H.headerSize, true);
  if (size < GPT_HEADER_MIN_SIZE || size > ss) return `header size ${size} at LBA ${lba} is impossible`;
  const hdr = Buffer.from(b.subarray(0, size));
  const crc = hdr.readUInt32LE(H.headerCrc32);
  hdr.writeUInt32LE(0, H.headerCrc32);
  if (crc32(hdr) !== crc) return `header CRC mismatch at LBA ${lba}`;
  if (Number(v.getBigUint64(H.myLba, true)) !== lba) return `header at LBA ${lba} says it is elsewhere`;
  const count = v.getUint32(H.entryCount, true);
  const entrySize = v.getUint32(H.entrySize, true);
  if (entrySize < GPT_ENTRY_MIN_SIZE || entrySize % 8 !== 0 || count * entrySize > MAX_GPT_ENTRY_BYTES)
    return `entry array ${count} × ${entrySize} bytes is impossible`;
  return {
    entriesLba: Number(v.getBigUint64(H.entriesLba, true)),
    count,
    entrySize,
    entriesCrc: v.getUint32(H.entriesCrc32, true),
    firstUsable: Number(v.getBigUint64(H.firstUsableLba, true)),
    lastUsable: Number(v.getBigUint64(H.lastUsableLba, true)),
    diskGuid: decodeGuid(b, H.diskGuid),
  };
}

async function readGpt(disk: BlockTarget): Promise<PartitionTable> {
  const ss = disk.sectorSize;
  const lastLba = disk.size / ss - 1;
  const warnings: string[] = [];
  let hdr = await gptHeader(disk, 1);
  let entries: Uint8Array | null = null;
  if (typeof hdr !== 'string') {
    entries = await gptEntries(disk, hdr);
    if (entries === null) hdr = 'entry array CRC mismatch (primary)';
  }
  if (typeof hdr === 'string') {
    const primaryProblem = hdr;
    const backup = await gptHeader(disk, lastLba);
    if (typeof backup === 'string') throw new PartitionError('PART_EBADTABLE', `GPT: ${primaryProblem}; backup: ${backup}`);
    entries = await gptEntries(disk, backup);
    if (entries === null) throw new PartitionError('PART_EBADTABLE', `GPT: ${primaryProblem}; backup: entry array CRC mismatch`);
    warnings.push(`primary GPT unusable (${primaryProblem}); the backup at LBA ${lastLba} was used`);
    hdr = backup;
  }
  const h = hdr;
  const parts: PartitionEntry[] = [];
  for (let i = 0; i < h.count; i++) {
    const e = entries!.subarray(i * h.entrySize, (i + 1) * h.entrySize);
    if (e.subarray(GE.typeGuid, GE.typeGuid + 16).every((x) => x === 0)) continue;
    const v = new DataView(e.buffer, e.byteOffset, e.byteLength);
    const first = Number(v.getBigUint64(GE.firstLba, true));
    const last = Number(v.getBigUint64(GE.lastLba, true));
    if (last < first) throw new PartitionError('PART_EBADTABLE', `GPT entry ${i + 1}: ends (LBA ${last}) before it starts (LBA ${first})`);
    const type = decodeGuid(e, GE.typeGuid);
    let name = Buffer.from(e.subarray(GE.name, GE.name + GPT_NAME_UNITS * 2)).toString('utf16le');
    const nul = name.indexOf('\0');
    if (nul >= 0) name = name.slice(0, nul);
    const entry: PartitionEntry = {
      number: i + 1,
      offset: first * ss,
      size: (last - first + 1) * ss,
      type,
      typeName: GPT_TYPES[type] ?? '',
      uuid: decodeGuid(e, GE.uniqueGuid),
      name,
      bootable: (v.getUint32(GE.attributes, true) & GPT_ATTR_LEGACY_BOOTABLE) !== 0,
    };
    if (first < h.firstUsable || last > h.lastUsable) {
      throw new PartitionError(
        'PART_EBADTABLE',
        `GPT entry ${i + 1}: LBA ${first}–${last} outside the usable ${h.firstUsable}–${h.lastUsable}`,
      );
    }
    parts.push(entry);
  }
  checkOverlaps(parts);
  return { kind: 'gpt', id: h.diskGuid, partitions: parts, warnings: [...warnings, ...pastEnd(disk, parts)] };
}

async function gptEntries(disk: BlockTarget, h: GptHeader): Promise<Uint8Array | null> {
  const bytes = h.count * h.entrySize;
  if (h.entriesLba * disk.sectorSize + bytes > disk.size) return null;
  const b = await readBytes(disk, h.entriesLba * disk.sectorSize, bytes);
  return crc32(b) === h.entriesCrc ? b : null;
}

/**
 * A partition of a disk, as a disk of its own: offsets are relative to its
 * start, and I/O that reaches past its end is refused with BLKIF_ERANGE
 * (as on the whole disk) before anything is sent.
 */
export class Partition implements BlockTarget {
  constructor(
    /** The whole disk. */
    readonly disk: BlockTarget,
    /** What the table says of it. */
    readonly entry: PartitionEntry,
  ) {
    if (entry.offset % disk.sectorSize !== 0 || entry.size % disk.sectorSize !== 0) {
      throw new PartitionError('PART_EBADTABLE', `partition ${entry.number} is not aligned to the disk's ${disk.sectorSize}-byte sectors`);
    }
    checkInside(disk, entry.number, entry.offset, entry.size);
  }

  get size(): number {
    return this.entry.size;
  }
  get sectorSize(): number {
    return this.disk.sectorSize;
  }
  get readOnly(): boolean {
    return this.disk.readOnly;
  }
  get canDiscard(): boolean {
    return this.disk.canDiscard;
  }

  private check(op: string, offset: number, length: number): void {
    if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0 || offset + length > this.entry.size) {
      throw new BlkifError(
        'BLKIF_ERANGE',
        `${op} of ${length} bytes at ${offset} is outside partition ${this.entry.number} (${this.entry.size} bytes)`,
      );
    }
  }

  readInto(offset: number, dst: Uint8Array): Promise<void> {
    try {
      this.check('read', offset, dst.byteLength);
    } catch (err) {
      return Promise.reject(err);
    }
    return this.disk.readInto(this.entry.offset + offset, dst);
  }

  write(offset: number, data: Uint8Array): Promise<void> {
    try {
      this.check('write', offset, data.byteLength);
    } catch (err) {
      return Promise.reject(err);
    }
    return this.disk.write(this.entry.offset + offset, data);
  }

  discard(offset: number, length: number): Promise<void> {
    try {
      this.check('discard', offset, length);
    } catch (err) {
      return Promise.reject(err);
    }
    return this.disk.discard(this.entry.offset + offset, length);
  }

  flush(): Promise<void> {
    return this.disk.flush();
  }
  allocBuffer(length: number): Uint8Array {
    return this.disk.allocBuffer(length);
  }
  freeBuffer(buf: Uint8Array): void {
    this.disk.freeBuffer(buf);
  }
}

/**
 * Partition `number` (1-based) of `disk`, read from its table: PART_ENOENT
 * when the table has no such partition, and the table's own errors.
 */
export async function openPartition(disk: BlockTarget, number: number): Promise<Partition> {
  const table = await readPartitionTable(disk);
  const entry = table.partitions.find((p) => p.number === number);
  if (entry === undefined) {
    const have = table.partitions.map((p) => p.number).join(', ') || 'none';
    throw new PartitionError('PART_ENOENT', `no partition ${number} (the ${table.kind.toUpperCase()} has: ${have})`);
  }
  return new Partition(disk, entry);
}
