// Unit tests of the pieces under diff: the deterministic tar header encoder (ustar fields,
// prefix split, PAX records and their lengths, refusals) read back by tar-stream and GNU tar,
// and the parallel gzip (one valid member, same bytes at any concurrency, edge sizes).

import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { describe, it } from 'node:test';
import { gunzipSync } from 'node:zlib';
import { extract } from 'tar-stream';
import { StratumError } from '../errors/errors.js';
import { tempDir } from '../testing/tmp.js';
import { bytes, HAVE_SETFATTR, setfattr } from './diff-fixtures.test.js';
import { ParallelGzip } from './parallel-gzip.js';
import { BLOCK, encodeHeader, padding, splitDevice, type TarWriteHeader } from './tar-writer.js';
import { parseGetfattr, readTreeXattrs } from './xattr-read.js';

const base = { mode: 0o644, uid: 0, gid: 0, size: 0, mtime: 1_600_000_000 } as const;

function archive(entries: readonly [TarWriteHeader, Buffer?][]): Buffer {
  const parts: Buffer[] = [];
  for (const [h, body] of entries) {
    parts.push(encodeHeader(h));
    if (body) parts.push(body, Buffer.alloc(padding(body.length)));
  }
  parts.push(Buffer.alloc(1024));
  return Buffer.concat(parts);
}

async function parse(tar: Buffer): Promise<{ name: string; header: Record<string, unknown> }[]> {
  const ex = extract({ filenameEncoding: 'latin1' } as Parameters<typeof extract>[0]);
  Readable.from([tar]).pipe(ex);
  const out: { name: string; header: Record<string, unknown> }[] = [];
  for await (const e of ex) {
    for await (const _ of e) {
      // drain
    }
    out.push({ name: e.header.name, header: e.header as unknown as Record<string, unknown> });
  }
  return out;
}

describe('tar header encoder', () => {
  it('writes a plain ustar block with a valid checksum, numeric owners and no names', async () => {
    const b = encodeHeader({
      ...base,
      name: 'etc/passwd',
      type: 'file',
      size: 5,
      uid: 1000,
      gid: 100,
      mode: 0o4755,
    });
    assert.equal(b.length, BLOCK);
    assert.equal(b.toString('latin1', 257, 263), 'ustar\0');
    assert.equal(b.toString('latin1', 263, 265), '00');
    assert.equal(b.toString('latin1', 100, 107), '0004755');
    assert.equal(b.toString('latin1', 265, 265 + 32).replace(/\0+$/, ''), '', 'uname empty');
    assert.equal(b.toString('latin1', 297, 297 + 32).replace(/\0+$/, ''), '', 'gname empty');
    let sum = 0;
    for (let i = 0; i < BLOCK; i++) sum += i >= 148 && i < 156 ? 0x20 : (b[i] as number);
    assert.equal(Number.parseInt(b.toString('latin1', 148, 154), 8), sum);
    const [e] = await parse(
      archive([[{ ...base, name: 'etc/passwd', type: 'file', size: 5 }, Buffer.from('hello')]]),
    );
    assert.equal(e?.name, 'etc/passwd');
  });

  it('splits long names into prefix + name where ustar allows, PAX otherwise', async () => {
    const fits = `${'p'.repeat(150)}/${'n'.repeat(99)}`;
    const a = encodeHeader({ ...base, name: fits, type: 'file' });
    assert.equal(a.length, BLOCK, 'prefix split, no PAX');
    assert.equal(a.toString('latin1', 345, 345 + 150), 'p'.repeat(150));
    const tooLongBase = `dir/${'n'.repeat(101)}`;
    const b = encodeHeader({ ...base, name: tooLongBase, type: 'file' });
    assert.ok(b.length > BLOCK, 'a base name over 100 bytes needs PAX');
    const deep = `${'d/'.repeat(200)}file`;
    const dirName = `${'x'.repeat(120)}/`;
    const got = await parse(
      archive([
        [{ ...base, name: fits, type: 'file' }],
        [{ ...base, name: tooLongBase, type: 'file' }],
        [{ ...base, name: deep, type: 'file' }],
        [{ ...base, name: dirName, type: 'directory', mode: 0o755 }],
      ]),
    );
    assert.deepEqual(
      got.map((g) => g.name),
      [fits, tooLongBase, deep, dirName],
    );
    // the PAX header's own name is deterministic and short
    assert.equal(
      b.toString('latin1', 0, 100).replace(/\0+$/, ''),
      `dir/PaxHeaders.0/${'n'.repeat(101)}`.slice(0, 100),
    );
    assert.equal(b.toString('latin1', 156, 157), 'x');
  });

  it('writes PAX records with self-counting lengths, sorted, for link targets, ids and xattrs', () => {
    const h = encodeHeader({
      ...base,
      name: 'l',
      type: 'symlink',
      linkname: 't'.repeat(300),
      uid: 2_097_152,
      gid: 7,
      xattrs: [
        ['user.z', Buffer.from('last')],
        ['security.capability', Buffer.from([1, 0, 0, 2])],
        ['user.nl', Buffer.from('a\nb')],
      ],
    });
    const size = Number.parseInt(h.toString('latin1', 124, 135), 8);
    const data = h.subarray(BLOCK, BLOCK + size);
    const keys: string[] = [];
    let off = 0;
    while (off < data.length) {
      const space = data.indexOf(0x20, off);
      const len = Number(data.toString('latin1', off, space));
      const rec = data.subarray(off, off + len);
      assert.equal(rec[rec.length - 1], 0x0a, 'each record ends with a newline at its stated length');
      keys.push(rec.toString('latin1', space - off + 1, rec.indexOf(0x3d)));
      off += len;
    }
    assert.deepEqual(keys, [
      'SCHILY.xattr.security.capability',
      'SCHILY.xattr.user.nl',
      'SCHILY.xattr.user.z',
      'linkpath',
      'uid',
    ]);
    // the ustar block after the PAX data: uid too large for 7 octal digits is 0 there
    const ustar = h.subarray(h.length - BLOCK);
    assert.equal(ustar.toString('latin1', 108, 115), '0000000');
    assert.equal(ustar.toString('latin1', 116, 123), '0000007');
  });

  it('gets the record length right around a change of digit count', () => {
    for (let n = 80; n < 120; n++) {
      const h = encodeHeader({
        ...base,
        name: 'f',
        type: 'file',
        xattrs: [['user.k', Buffer.alloc(n, 0x61)]],
      });
      const size = Number.parseInt(h.toString('latin1', 124, 135), 8);
      const data = h.subarray(BLOCK, BLOCK + size);
      assert.equal(Number(data.toString('latin1', 0, data.indexOf(0x20))), size, `value of ${n} bytes`);
    }
  });

  it('is read the same by GNU tar (long names, long links, big ids, devices, xattrs)', async (t) => {
    const dir = await tempDir(t);
    const tar = archive([
      [
        { ...base, name: `${'a'.repeat(90)}/${'b'.repeat(90)}/${'c'.repeat(90)}`, type: 'file', size: 3 },
        Buffer.from('abc'),
      ],
      [{ ...base, name: 'link', type: 'symlink', linkname: `/${'l'.repeat(200)}` }],
      [{ ...base, name: 'ids', type: 'file', uid: 4_000_000, gid: 4_000_001 }],
      [{ ...base, name: 'dev', type: 'char', devmajor: 4095, devminor: 1_048_575 }],
      [{ ...base, name: 'x', type: 'file', xattrs: [['user.k', Buffer.from('v')]] }],
    ]);
    const file = join(dir, 't.tar');
    writeFileSync(file, tar);
    const listing = execFileSync('tar', ['-tvf', file, '--numeric-owner'], { encoding: 'utf8' });
    assert.match(listing, new RegExp(`${'a'.repeat(90)}/${'b'.repeat(90)}/${'c'.repeat(90)}`));
    assert.match(listing, new RegExp(`link -> /${'l'.repeat(200)}`));
    assert.match(listing, /4000000\/4000001/);
    assert.match(listing, /4095,1048575/);
  });

  it('refuses what a header cannot hold', () => {
    const bad = (h: Partial<TarWriteHeader>): string => {
      try {
        encodeHeader({ ...base, name: 'f', type: 'file', ...h });
      } catch (e) {
        assert.ok(e instanceof StratumError);
        return e.code;
      }
      return 'no error';
    };
    assert.equal(bad({ name: 'a\0b' }), 'ERR_INVALID_ARGUMENT');
    assert.equal(bad({ type: 'symlink', linkname: 'x\0' }), 'ERR_INVALID_ARGUMENT');
    assert.equal(bad({ size: -1 }), 'ERR_INVALID_ARGUMENT');
    assert.equal(bad({ size: 1.5 }), 'ERR_INVALID_ARGUMENT');
    assert.equal(bad({ type: 'char', devmajor: 2 ** 21 + 1 }), 'ERR_INVALID_ARGUMENT');
    assert.equal(bad({ xattrs: [['user.a=b', Buffer.from('')]] }), 'ERR_INVALID_ARGUMENT');
    // large sizes go to PAX rather than failing
    const huge = encodeHeader({ ...base, name: 'f', type: 'file', size: 2 ** 34 });
    assert.ok(huge.includes('size=17179869184\n'));
    // negative and far-future times are clamped into the field
    const past = encodeHeader({ ...base, name: 'f', type: 'file', mtime: -5 });
    assert.equal(past.toString('latin1', 136, 147), '00000000000');
  });

  it('splits Linux device numbers as glibc encodes them', () => {
    // makedev(major, minor) as glibc computes it, done in BigInt
    const makedev = (ma: number, mi: number): number =>
      Number(
        (BigInt(mi) & 0xffn) |
          ((BigInt(ma) & 0xfffn) << 8n) |
          ((BigInt(mi) & ~0xffn) << 12n) |
          ((BigInt(ma) & ~0xfffn) << 32n),
      );
    for (const [ma, mi] of [
      [0, 0],
      [1, 3],
      [8, 17],
      [240, 1_048_575],
      [4095, 255],
      [4096, 1],
      [1_000_000, 2_000_000],
    ] as const) {
      assert.deepEqual(splitDevice(makedev(ma, mi)), { major: ma, minor: mi });
    }
  });
});

describe('parallel gzip', () => {
  async function gzip(data: Buffer, block: number, concurrency: number, level = 6): Promise<Buffer> {
    const out: Buffer[] = [];
    const gz = new ParallelGzip({ level, concurrency, emit: (c) => void out.push(c) });
    let off = 0;
    while (data.length - off > block) {
      await gz.push(data.subarray(off, off + block));
      off += block;
    }
    await gz.finish(data.subarray(off));
    return Buffer.concat(out);
  }

  it('makes one gzip member that gunzip and gzip -t accept, the same at any concurrency', async (t) => {
    const dir = await tempDir(t);
    const data = Buffer.concat([bytes(300_000, 'random'), Buffer.from('compressible text '.repeat(50_000))]);
    const one = await gzip(data, 64 * 1024, 1);
    for (const c of [2, 3, 16]) assert.deepEqual(await gzip(data, 64 * 1024, c), one);
    assert.deepEqual(gunzipSync(one), data);
    assert.equal(one.indexOf(Buffer.from([0x1f, 0x8b, 8]), 1), -1, 'a single member (no second header)');
    assert.ok(one.length < data.length * 0.5);
    const file = join(dir, 'x.gz');
    writeFileSync(file, one);
    execFileSync('gzip', ['-t', file]);
    assert.deepEqual(execFileSync('gzip', ['-dc', file], { maxBuffer: 1 << 26 }), data);
  });

  it('handles an empty input, one block, and input that ends on a block boundary', async () => {
    for (const size of [0, 1, 65_536, 131_072, 131_073]) {
      const data = bytes(size, `edge${size}`);
      const gz = await gzip(data, 65_536, 2);
      assert.deepEqual(gunzipSync(gz), data, `${size} bytes`);
    }
  });

  it('level 0 stores, level 9 squeezes, both decode', async () => {
    const data = Buffer.from('abcabcabc '.repeat(30_000));
    const stored = await gzip(data, 65_536, 2, 0);
    const best = await gzip(data, 65_536, 2, 9);
    assert.ok(stored.length > data.length);
    assert.ok(best.length < data.length / 50);
    assert.deepEqual(gunzipSync(stored), data);
    assert.deepEqual(gunzipSync(best), data);
  });
});

describe('xattrs of a tree through getfattr', () => {
  it('parses escaped names, every value form, and only paths under the root', () => {
    const text = [
      '# file: /r/a\\134b\\012c\\040d',
      'user.hex=0x00ff',
      'user.empty=',
      'user.b64=0sAP8=',
      'user.text="q\\042"',
      '',
      '# file: /r',
      'trusted.overlay.opaque=0x79',
      '',
      '# file: /elsewhere/x',
      'user.no=0x01',
      '',
    ].join('\n');
    const m = parseGetfattr(text, '/r');
    assert.deepEqual([...m.keys()], ['a\\b\nc d', '']);
    assert.deepEqual(m.get('a\\b\nc d'), [
      ['user.b64', Buffer.from([0, 0xff])],
      ['user.empty', Buffer.alloc(0)],
      ['user.hex', Buffer.from([0, 0xff])],
      ['user.text', Buffer.from('q"')],
    ]);
    assert.deepEqual(m.get(''), [['trusted.overlay.opaque', Buffer.from('y')]]);
  });

  it('reads names with spaces, backslashes, newlines and bytes that are not UTF-8', {
    skip: HAVE_SETFATTR ? false : 'setfattr (Debian package attr) is not installed',
  }, async (t) => {
    const dir = await tempDir(t);
    const names = ['plain', 'with space', 'back\\slash', 'new\nline'];
    for (const n of names) {
      writeFileSync(join(dir, n), '');
      setfattr(join(dir, n), 'user.name', `0x${Buffer.from(n).toString('hex')}`);
    }
    const raw = Buffer.concat([Buffer.from(`${dir}/`), Buffer.from([0x78, 0xff])]);
    writeFileSync(raw, '');
    // argv from node is UTF-8: let the shell make the raw byte
    execFileSync('sh', ['-c', `setfattr -n user.raw -v 0x01 "$(printf '%s/x\\377' "$1")"`, 'sh', dir]);
    const m = await readTreeXattrs(dir);
    for (const n of names) assert.deepEqual(m.get(n), [['user.name', Buffer.from(n)]], n);
    assert.deepEqual(m.get('x\xff'), [['user.raw', Buffer.from([1])]]);
  });
});
