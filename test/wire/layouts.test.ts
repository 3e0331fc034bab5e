/**
 * Golden layouts: every size, offset and constant of the TypeScript wire
 * modules checked by gcc itself against Xen's own headers (libxen-dev), as
 * `_Static_assert`s compiled for both ABIs (-m64 and -m32; compile-only, so
 * no 32-bit code runs), plus xs_wire.h's error table and ring.h's event rules
 * from a probe run natively.
 */
import { describe, expect, it } from 'vitest';
import { fileURLToPath } from 'node:url';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { blankImage, run, scratch } from '../helpers/images.js';
import {
  GPT_ATTR_LEGACY_BOOTABLE,
  GPT_ENTRY_MIN_SIZE,
  GPT_HEADER_MIN_SIZE,
  GPT_NAME_UNITS,
  GPT_SIGNATURE,
  GptEntryOffset,
  GptHeaderOffset,
  MBR_BOOTABLE,
  MBR_ENTRIES,
  MBR_ENTRY_SIZE,
  MBR_SIGNATURE,
  MBR_SIZE,
  MBR_TYPE_GPT_PROTECTIVE,
  MbrEntryOffset,
  MbrOffset,
  decodeGuid,
} from '../../src/wire/partition_table.js';
import { compileAndRun, compileChecks, type CCheck } from '../helpers/cc.js';
import {
  BLKIF_ABI_X86_32,
  BLKIF_ABI_X86_64,
  BLKIF_DISCARD_SECURE,
  BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST,
  BLKIF_MAX_SEGMENTS_PER_REQUEST,
  BLKIF_SEGMENT_SIZE,
  BlkifOp,
  BlkifRsp,
  SegmentOffset,
  VDISK_CDROM,
  VDISK_READONLY,
  VDISK_REMOVABLE,
  type BlkifAbi,
} from '../../src/wire/blkif.js';
import {
  SRING_HEADER_SIZE,
  SringOffset,
  SringWord,
  finalCheckForResponses,
  needsNotify,
  ringEntries,
  sringInit,
} from '../../src/wire/ring.js';
import * as GT from '../../src/wire/grant_table.js';
import {
  XENSTORE_ABS_PATH_MAX,
  XENSTORE_CONNECTED,
  XENSTORE_ERROR_COMM,
  XENSTORE_ERROR_NONE,
  XENSTORE_ERROR_PROTO,
  XENSTORE_ERROR_RINGIDX,
  XENSTORE_PAYLOAD_MAX,
  XENSTORE_RECONNECT,
  XENSTORE_REL_PATH_MAX,
  XENSTORE_RING_SIZE,
  XENSTORE_SERVER_FEATURE_ERROR,
  XENSTORE_SERVER_FEATURE_RECONNECTION,
  XS_HEADER_SIZE,
  XS_INVALID,
  XS_RING_INTERFACE_SIZE,
  XS_TYPE_COUNT,
  XS_WATCH_PATH,
  XS_WATCH_TOKEN,
  XsHeaderOffset,
  XsRingOffset,
  XsType,
} from '../../src/wire/xs_wire.js';
import { XenbusState } from '../../src/wire/xenbus_state.js';
import { XS_ERRNO_NAMES } from '../../src/errors.js';
import * as EXT from '../../src/wire/ext_superblock.js';

const probeSource = fileURLToPath(new URL('./probe.c', import.meta.url));
const prelude = `#include "${fileURLToPath(new URL('./xen_headers.h', import.meta.url))}"`;

function parse(out: string): { values: Map<string, string>; lines: string[] } {
  const values = new Map<string, string>();
  const lines: string[] = [];
  for (const line of out.split('\n')) {
    if (line === '') continue;
    if (line.startsWith('push ') || line.startsWith('final ')) lines.push(line);
    else {
      const sp = line.indexOf(' ');
      values.set(line.slice(0, sp), line.slice(sp + 1));
    }
  }
  return { values, lines };
}

const probe64 = parse(compileAndRun(probeSource, ['-m64']));

/** The C expression for a figure's name: `sizeof.T`, `offsetof.T.f`, `ring_entries.N`, or a macro. */
function cExpr(name: string): string {
  const [kind, a, b] = name.split('.');
  if (kind === 'abi' && a === 'bits') return 'sizeof(void *) * 8';
  if (kind === 'sizeof') return a === 'blkif_sring_entry' ? 'sizeof(union blkif_sring_entry)' : `sizeof(struct ${a})`;
  if (kind === 'offsetof') return `offsetof(struct ${a}, ${b})`;
  if (kind === 'ring_entries') return `__CONST_RING_SIZE(blkif, 4096 * ${a})`;
  return name;
}

function checks(figures: Record<string, number>): CCheck[] {
  return Object.entries(figures).map(([name, value]) => ({ name, expr: cExpr(name), value }));
}

/** The numeric exports of `mod` whose names match `re` (C's names for them), at least `atLeast` of them. */
function constants(mod: Record<string, unknown>, re: RegExp, atLeast: number): Record<string, number> {
  const out = Object.fromEntries(Object.entries(mod).filter((e): e is [string, number] => re.test(e[0]) && typeof e[1] === 'number'));
  expect(Object.keys(out).length).toBeGreaterThanOrEqual(atLeast);
  return out;
}

/** The figures gcc refuses with `flags`: none, when TypeScript and the headers agree. */
function refused(figures: Record<string, number>, flags: string[] = ['-m64']): string[] {
  return compileChecks(prelude, checks(figures), flags);
}

/** ABI-independent figures: gcc must agree with them built -m64 and -m32 alike. */
function expectAgreesOnBothAbis(figures: Record<string, number>): void {
  expect(refused(figures, ['-m64'])).toEqual([]);
  expect(refused(figures, ['-m32'])).toEqual([]);
}

function blkifFigures(abi: BlkifAbi): Record<string, number> {
  const r = abi.request,
    ind = abi.indirect,
    d = abi.discard,
    rsp = abi.response;
  return {
    'abi.bits': abi === BLKIF_ABI_X86_32 ? 32 : 64,
    'sizeof.blkif_request': r.size,
    'offsetof.blkif_request.operation': r.operation,
    'offsetof.blkif_request.nr_segments': r.nrSegments,
    'offsetof.blkif_request.handle': r.handle,
    'offsetof.blkif_request.id': r.id,
    'offsetof.blkif_request.sector_number': r.sectorNumber,
    'offsetof.blkif_request.seg': r.seg,
    'sizeof.blkif_request_indirect': ind.size,
    'offsetof.blkif_request_indirect.operation': ind.operation,
    'offsetof.blkif_request_indirect.indirect_op': ind.indirectOp,
    'offsetof.blkif_request_indirect.nr_segments': ind.nrSegments,
    'offsetof.blkif_request_indirect.id': ind.id,
    'offsetof.blkif_request_indirect.sector_number': ind.sectorNumber,
    'offsetof.blkif_request_indirect.handle': ind.handle,
    'offsetof.blkif_request_indirect.indirect_grefs': ind.indirectGrefs,
    'sizeof.blkif_request_discard': d.size,
    'offsetof.blkif_request_discard.operation': d.operation,
    'offsetof.blkif_request_discard.flag': d.flag,
    'offsetof.blkif_request_discard.handle': d.handle,
    'offsetof.blkif_request_discard.id': d.id,
    'offsetof.blkif_request_discard.sector_number': d.sectorNumber,
    'offsetof.blkif_request_discard.nr_sectors': d.nrSectors,
    'sizeof.blkif_response': rsp.size,
    'offsetof.blkif_response.id': rsp.id,
    'offsetof.blkif_response.operation': rsp.operation,
    'offsetof.blkif_response.status': rsp.status,
    'sizeof.blkif_sring_entry': abi.entrySize,
    'sizeof.blkif_request_segment': BLKIF_SEGMENT_SIZE,
    'offsetof.blkif_request_segment.gref': SegmentOffset.gref,
    'offsetof.blkif_request_segment.first_sect': SegmentOffset.firstSect,
    'offsetof.blkif_request_segment.last_sect': SegmentOffset.lastSect,
    'offsetof.blkif_sring.req_prod': SringOffset.reqProd,
    'offsetof.blkif_sring.req_event': SringOffset.reqEvent,
    'offsetof.blkif_sring.rsp_prod': SringOffset.rspProd,
    'offsetof.blkif_sring.rsp_event': SringOffset.rspEvent,
    'offsetof.blkif_sring.pvt': SringOffset.pvt,
    'offsetof.blkif_sring.ring': SringOffset.ring,
    ...Object.fromEntries([1, 2, 4, 8, 16].map((p) => [`ring_entries.${p}`, ringEntries(p * 4096, abi.entrySize)])),
  };
}

describe('blkif.h layouts against the C headers', () => {
  it('x86_64-abi matches gcc -m64', () => {
    expect(refused(blkifFigures(BLKIF_ABI_X86_64), ['-m64'])).toEqual([]);
  });

  it('x86_32-abi matches gcc -m32 (compile-only: no 32-bit code runs)', () => {
    expect(refused(blkifFigures(BLKIF_ABI_X86_32), ['-m32'])).toEqual([]);
  });

  it("a wrong figure is refused by name: each ABI's table fails exactly where the two ABIs differ", () => {
    const f64 = blkifFigures(BLKIF_ABI_X86_64),
      f32 = blkifFigures(BLKIF_ABI_X86_32);
    const differ = Object.keys(f64).filter((k) => f64[k] !== f32[k]);
    // The ABIs must differ (the id's alignment), or this proves nothing.
    expect(differ).toContain('offsetof.blkif_request.id');
    expect(refused(f64, ['-m32'])).toEqual(differ);
    expect(refused(f32, ['-m64'])).toEqual(differ);
  });

  it('constants match', () => {
    expectAgreesOnBothAbis({
      BLKIF_OP_READ: BlkifOp.Read,
      BLKIF_OP_WRITE: BlkifOp.Write,
      BLKIF_OP_WRITE_BARRIER: BlkifOp.WriteBarrier,
      BLKIF_OP_FLUSH_DISKCACHE: BlkifOp.FlushDiskcache,
      BLKIF_OP_RESERVED_1: BlkifOp.Reserved1,
      BLKIF_OP_DISCARD: BlkifOp.Discard,
      BLKIF_OP_INDIRECT: BlkifOp.Indirect,
      BLKIF_MAX_SEGMENTS_PER_REQUEST,
      BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST,
      BLKIF_RSP_OKAY: BlkifRsp.Okay,
      BLKIF_RSP_ERROR: BlkifRsp.Error,
      BLKIF_RSP_EOPNOTSUPP: BlkifRsp.EOpNotSupp,
      BLKIF_DISCARD_SECURE,
      VDISK_CDROM,
      VDISK_REMOVABLE,
      VDISK_READONLY,
    });
  });
});

describe('grant_table.h, xs_wire.h and xenbus.h against the C headers', () => {
  it('grant_entry_v1 and GTF flags', () => {
    expectAgreesOnBothAbis({
      'sizeof.grant_entry_v1': GT.GRANT_ENTRY_V1_SIZE,
      'offsetof.grant_entry_v1.flags': GT.GrantEntryV1Offset.flags,
      'offsetof.grant_entry_v1.domid': GT.GrantEntryV1Offset.domid,
      'offsetof.grant_entry_v1.frame': GT.GrantEntryV1Offset.frame,
      // Every flag, reserved entry and status the module exports, by its C name.
      ...constants(GT, /^(GTF_|GNTTAB_|GNTST_)/, 22),
    });
  });

  it('xsd_sockmsg, message types and limits', () => {
    const types: Record<string, number> = {
      XS_CONTROL: XsType.Control,
      XS_DIRECTORY: XsType.Directory,
      XS_READ: XsType.Read,
      XS_GET_PERMS: XsType.GetPerms,
      XS_WATCH: XsType.Watch,
      XS_UNWATCH: XsType.Unwatch,
      XS_TRANSACTION_START: XsType.TransactionStart,
      XS_TRANSACTION_END: XsType.TransactionEnd,
      XS_INTRODUCE: XsType.Introduce,
      XS_RELEASE: XsType.Release,
      XS_GET_DOMAIN_PATH: XsType.GetDomainPath,
      XS_WRITE: XsType.Write,
      XS_MKDIR: XsType.Mkdir,
      XS_RM: XsType.Rm,
      XS_SET_PERMS: XsType.SetPerms,
      XS_WATCH_EVENT: XsType.WatchEvent,
      XS_ERROR: XsType.Error,
      XS_IS_DOMAIN_INTRODUCED: XsType.IsDomainIntroduced,
      XS_RESUME: XsType.Resume,
      XS_SET_TARGET: XsType.SetTarget,
      XS_RESET_WATCHES: XsType.ResetWatches,
      XS_DIRECTORY_PART: XsType.DirectoryPart,
    };
    expectAgreesOnBothAbis({
      'sizeof.xsd_sockmsg': XS_HEADER_SIZE,
      'offsetof.xsd_sockmsg.type': XsHeaderOffset.type,
      'offsetof.xsd_sockmsg.req_id': XsHeaderOffset.reqId,
      'offsetof.xsd_sockmsg.tx_id': XsHeaderOffset.txId,
      'offsetof.xsd_sockmsg.len': XsHeaderOffset.len,
      ...types,
      XS_TYPE_COUNT,
      XS_INVALID,
      XS_WATCH_PATH,
      XS_WATCH_TOKEN,
      XENSTORE_PAYLOAD_MAX,
      XENSTORE_ABS_PATH_MAX,
      XENSTORE_REL_PATH_MAX,
    });
  });

  it('xsd_errors names, in order', () => {
    XS_ERRNO_NAMES.forEach((name, i) => expect(probe64.values.get(`xsd_errors.${i}`)).toBe(name));
    expect(probe64.values.has(`xsd_errors.${XS_ERRNO_NAMES.length}`)).toBe(false);
  });

  it('xenstore_domain_interface (the ring page)', () => {
    expectAgreesOnBothAbis({
      XENSTORE_RING_SIZE,
      'sizeof.xenstore_domain_interface': XS_RING_INTERFACE_SIZE,
      'offsetof.xenstore_domain_interface.req': XsRingOffset.req,
      'offsetof.xenstore_domain_interface.rsp': XsRingOffset.rsp,
      'offsetof.xenstore_domain_interface.req_cons': XsRingOffset.reqCons,
      'offsetof.xenstore_domain_interface.req_prod': XsRingOffset.reqProd,
      'offsetof.xenstore_domain_interface.rsp_cons': XsRingOffset.rspCons,
      'offsetof.xenstore_domain_interface.rsp_prod': XsRingOffset.rspProd,
      'offsetof.xenstore_domain_interface.server_features': XsRingOffset.serverFeatures,
      'offsetof.xenstore_domain_interface.connection': XsRingOffset.connection,
      'offsetof.xenstore_domain_interface.error': XsRingOffset.error,
      XENSTORE_SERVER_FEATURE_RECONNECTION,
      XENSTORE_SERVER_FEATURE_ERROR,
      XENSTORE_CONNECTED,
      XENSTORE_RECONNECT,
      XENSTORE_ERROR_NONE,
      XENSTORE_ERROR_COMM,
      XENSTORE_ERROR_RINGIDX,
      XENSTORE_ERROR_PROTO,
    });
  });

  it('xenbus states', () => {
    expectAgreesOnBothAbis(Object.fromEntries(Object.entries(XenbusState).map(([k, v]) => [`XenbusState${k}`, v])));
  });
});

describe("ring.h event rules against Xen's own macros", () => {
  it('SHARED_RING_INIT sets both event fields to 1', () => {
    const words = new Int32Array(SRING_HEADER_SIZE / 4);
    sringInit(words);
    expect(words[SringWord.reqEvent]).toBe(Number(probe64.values.get('init.req_event')));
    expect(words[SringWord.rspEvent]).toBe(Number(probe64.values.get('init.rsp_event')));
  });

  it('RING_PUSH_REQUESTS_AND_CHECK_NOTIFY agrees on 2000 index triples, wraps included', () => {
    const push = probe64.lines.filter((l) => l.startsWith('push '));
    expect(push.length).toBe(2000);
    let notified = 0,
      wrapped = 0;
    for (const line of push) {
      const [, oldS, newS, evS, want] = line.split(' ');
      const old = Number(oldS),
        nw = Number(newS),
        ev = Number(evS);
      if (nw < old) wrapped++;
      const got = needsNotify(old, nw, ev);
      if (got) notified++;
      expect(`${line} -> ${got ? 1 : 0}`).toBe(`${line} -> ${want}`);
    }
    // The sample must exercise both answers and the u32 wrap, or it proves little.
    expect(notified).toBeGreaterThan(100);
    expect(push.length - notified).toBeGreaterThan(100);
    expect(wrapped).toBeGreaterThan(20);
  });

  it('RING_FINAL_CHECK_FOR_RESPONSES agrees on work and on rsp_event', () => {
    const fin = probe64.lines.filter((l) => l.startsWith('final '));
    expect(fin.length).toBe(500);
    const words = new Int32Array(SRING_HEADER_SIZE / 4);
    for (const line of fin) {
      const [, prodS, consS, work, evAfter] = line.split(' ');
      words[SringWord.rspProd] = Number(prodS) | 0;
      words[SringWord.rspEvent] = 7;
      const got = finalCheckForResponses(words, Number(consS));
      expect(`${line} -> ${got ? 1 : 0} ${words[SringWord.rspEvent]! >>> 0}`).toBe(`${line} -> ${work} ${evAfter}`);
    }
  });
});

describe("the ext superblock against e2fsprogs' ext2_fs.h (libext2fs-dev)", () => {
  it('every offset, size and flag the files layer reads', () => {
    const figures: CCheck[] = [
      // The superblock sits after the first 1 KiB (the boot block), whatever the block size.
      { name: 'EXT2_MIN_BLOCK_SIZE', expr: 'EXT2_MIN_BLOCK_SIZE', value: EXT.EXT_SUPERBLOCK_OFFSET },
      { name: 'sizeof(ext2_super_block)', expr: 'sizeof(struct ext2_super_block)', value: EXT.EXT_SUPERBLOCK_SIZE },
      // Every magic number and feature flag the module exports, by its C name.
      ...Object.entries(constants(EXT, /^EXT[234]_/, 9)).map(([name, value]) => ({ name, expr: name, value })),
    ];
    const field: Record<keyof typeof EXT.ExtSuperOffset, string> = {
      inodesCount: 's_inodes_count',
      blocksCount: 's_blocks_count',
      freeBlocksCount: 's_free_blocks_count',
      freeInodesCount: 's_free_inodes_count',
      logBlockSize: 's_log_block_size',
      mtime: 's_mtime',
      wtime: 's_wtime',
      mntCount: 's_mnt_count',
      maxMntCount: 's_max_mnt_count',
      magic: 's_magic',
      state: 's_state',
      lastcheck: 's_lastcheck',
      checkinterval: 's_checkinterval',
      featureCompat: 's_feature_compat',
      featureIncompat: 's_feature_incompat',
      featureRoCompat: 's_feature_ro_compat',
      uuid: 's_uuid',
      volumeName: 's_volume_name',
      lastOrphan: 's_last_orphan',
      blocksCountHi: 's_blocks_count_hi',
      freeBlocksHi: 's_free_blocks_hi',
      checksumType: 's_checksum_type',
      errorCount: 's_error_count',
      firstErrorTime: 's_first_error_time',
      firstErrorFunc: 's_first_error_func',
      lastErrorTime: 's_last_error_time',
      lastErrorFunc: 's_last_error_func',
      checksum: 's_checksum',
    };
    for (const [k, f] of Object.entries(field)) {
      figures.push({
        name: `offsetof(${f})`,
        expr: `offsetof(struct ext2_super_block, ${f})`,
        value: EXT.ExtSuperOffset[k as keyof typeof EXT.ExtSuperOffset],
      });
    }
    expect(figures.length).toBeGreaterThan(20);
    expect(compileChecks('#include <stddef.h>\n#include <ext2fs/ext2_fs.h>', figures)).toEqual([]);
  });
});

describe('MBR and GPT layouts against the tools that write them (sfdisk, sgdisk)', () => {
  it('the GPT header and entry fields sgdisk wrote, read through the offset tables', () => {
    const s = scratch();
    try {
      const img = join(s.dir, 'gpt.img');
      blankImage(img, 8 << 20);
      run('sgdisk', ['-n', '1:2048:+2M', '-t', '1:8300', '-c', '1:layout-probe', '-A', '1:set:2', img]);
      const printed = run('sgdisk', ['-p', img]);
      const info = run('sgdisk', ['-i', '1', img]);
      const b = readFileSync(img);
      const hv = new DataView(b.buffer, b.byteOffset + 512, 512);
      expect(b.subarray(512, 512 + 8).toString('latin1')).toBe(GPT_SIGNATURE);
      expect(hv.getUint32(GptHeaderOffset.headerSize, true)).toBe(GPT_HEADER_MIN_SIZE);
      expect(Number(hv.getBigUint64(GptHeaderOffset.myLba, true))).toBe(1);
      expect(Number(hv.getBigUint64(GptHeaderOffset.alternateLba, true))).toBe((8 << 20) / 512 - 1);
      expect(printed).toContain(`Disk identifier (GUID): ${decodeGuid(b, 512 + GptHeaderOffset.diskGuid)}`);
      expect(printed).toContain(`holds up to ${hv.getUint32(GptHeaderOffset.entryCount, true)} entries`);
      expect(printed).toContain(`begins at sector ${Number(hv.getBigUint64(GptHeaderOffset.entriesLba, true))}`);
      expect(printed).toMatch(
        new RegExp(
          `First usable sector is ${Number(hv.getBigUint64(GptHeaderOffset.firstUsableLba, true))}, ` +
            `last usable sector is ${Number(hv.getBigUint64(GptHeaderOffset.lastUsableLba, true))}`,
        ),
      );
      expect(hv.getUint32(GptHeaderOffset.entrySize, true)).toBe(GPT_ENTRY_MIN_SIZE);
      const e = 1024; // the first entry, at LBA 2
      const ev = new DataView(b.buffer, b.byteOffset + e, GPT_ENTRY_MIN_SIZE);
      expect(info).toContain(`Partition unique GUID: ${decodeGuid(b, e + GptEntryOffset.uniqueGuid)}`);
      expect(info).toContain(`Partition GUID code: ${decodeGuid(b, e + GptEntryOffset.typeGuid)}`);
      expect(info).toContain(`First sector: ${Number(ev.getBigUint64(GptEntryOffset.firstLba, true))} `);
      expect(info).toContain(`Last sector: ${Number(ev.getBigUint64(GptEntryOffset.lastLba, true))} `);
      expect(Number(ev.getBigUint64(GptEntryOffset.attributes, true)) & GPT_ATTR_LEGACY_BOOTABLE).toBe(GPT_ATTR_LEGACY_BOOTABLE);
      expect(
        b
          .subarray(e + GptEntryOffset.name, e + GptEntryOffset.name + 2 * GPT_NAME_UNITS)
          .toString('utf16le')
          .replace(/\0+$/, ''),
      ).toBe('layout-probe');
      // The protective MBR sgdisk wrote in front of it.
      expect(b[MbrOffset.entries + MbrEntryOffset.type]).toBe(MBR_TYPE_GPT_PROTECTIVE);
      expect([b[MbrOffset.signature], b[MbrOffset.signature + 1]]).toEqual([...MBR_SIGNATURE]);
    } finally {
      s.remove();
    }
  });

  it('the MBR entries sfdisk wrote, read through the offset tables', () => {
    const s = scratch();
    try {
      const img = join(s.dir, 'mbr.img');
      blankImage(img, 8 << 20);
      run(
        'sfdisk',
        ['--no-reread', '--no-tell-kernel', img],
        'label: dos\nlabel-id: 0x1234abcd\nstart=2048, size=4096, type=83, bootable\nstart=8192, size=2048, type=82\n',
      );
      const b = readFileSync(img);
      const v = new DataView(b.buffer, b.byteOffset, MBR_SIZE);
      expect(v.getUint32(MbrOffset.diskSignature, true)).toBe(0x1234abcd);
      const at = (i: number): number => MbrOffset.entries + i * MBR_ENTRY_SIZE;
      expect([
        b[at(0) + MbrEntryOffset.bootFlag],
        b[at(0) + MbrEntryOffset.type],
        v.getUint32(at(0) + MbrEntryOffset.firstLba, true),
        v.getUint32(at(0) + MbrEntryOffset.sectors, true),
      ]).toEqual([MBR_BOOTABLE, 0x83, 2048, 4096]);
      expect([
        b[at(1) + MbrEntryOffset.bootFlag],
        b[at(1) + MbrEntryOffset.type],
        v.getUint32(at(1) + MbrEntryOffset.firstLba, true),
        v.getUint32(at(1) + MbrEntryOffset.sectors, true),
      ]).toEqual([0, 0x82, 8192, 2048]);
      expect(at(MBR_ENTRIES)).toBe(MbrOffset.signature);
    } finally {
      s.remove();
    }
  });
});
