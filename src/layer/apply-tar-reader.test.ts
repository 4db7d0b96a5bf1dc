// The streaming tar reader on its own: every format GNU tar writes (v7, oldgnu, gnu, ustar,
// posix), incremental dump directories and volume labels, global PAX headers, signed
// checksums, and names that are not UTF-8.

import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { link, mkdir, symlink, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { tempDir } from '../testing/tmp.js';
import { applyLayer } from './apply.js';
import { entryBlocks, execFileP, file, headerBlock, makeTarball, streamOf } from './apply-fixtures.js';
import { type TarHeader, TarReader } from './tar-reader.js';

interface Parsed {
  readonly header: TarHeader;
  readonly body: Buffer;
}

async function parse(tar: Buffer, chunk = 333): Promise<Parsed[]> {
  const out: Parsed[] = [];
  let body: Buffer[] = [];
  let cur: TarHeader | undefined;
  const reader = new TarReader({
    entry(h) {
      cur = h;
      body = [];
    },
    data(c) {
      body.push(Buffer.from(c));
    },
    entryEnd() {
      out.push({ header: cur as TarHeader, body: Buffer.concat(body) });
    },
  });
  for (let i = 0; i < tar.length; i += chunk) {
    const r = reader.write(tar.subarray(i, i + chunk));
    if (r) await r;
  }
  reader.end();
  return out;
}

async function sourceTree(t: { after: (fn: () => Promise<void>) => void }): Promise<string> {
  const src = await tempDir(t);
  await mkdir(join(src, 'd'));
  await writeFile(join(src, 'd/f.txt'), 'hello');
  await link(join(src, 'd/f.txt'), join(src, 'd/hard'));
  await symlink('f.txt', join(src, 'd/sym'));
  await utimes(join(src, 'd/f.txt'), 1_111_111_111, 1_111_111_111);
  return src;
}

describe('tar reader: what GNU tar writes', () => {
  for (const format of ['v7', 'oldgnu', 'gnu', 'ustar', 'posix'] as const) {
    it(`--format=${format}`, async (t) => {
      const src = await sourceTree(t);
      const out = await tempDir(t);
      const tarPath = join(out, 'x.tar');
      await execFileP('tar', [`--format=${format}`, '--numeric-owner', '-C', src, '-cf', tarPath, 'd']);
      const entries = await parse(readFileSync(tarPath));
      const byName = new Map(entries.map((e) => [e.header.name.replace(/\/$/, ''), e]));
      assert.equal(byName.get('d')?.header.type, 'directory');
      // of the two names of one inode, the first stored is the file, the other a hard link to it
      const f = entries.find((e) => e.header.type === 'file');
      assert.ok(f && ['d/f.txt', 'd/hard'].includes(f.header.name), f?.header.name);
      assert.equal(f?.body.toString(), 'hello');
      assert.equal(f?.header.mtime, 1_111_111_111);
      assert.equal(f?.header.size, 5);
      const sym = byName.get('d/sym');
      assert.equal(sym?.header.type, 'symlink');
      assert.equal(sym?.header.linkname, 'f.txt');
      const hard = entries.find((e) => e.header.type === 'hardlink');
      assert.ok(hard);
      assert.equal(hard.header.linkname, f.header.name);
      if (format === 'posix') assert.equal(typeof f?.header.atime, 'number');
    });
  }

  it('an incremental dump (GNU "D" directories) applies like an ordinary tar', async (t) => {
    const src = await sourceTree(t);
    const out = await tempDir(t);
    const tarPath = join(out, 'inc.tar');
    await execFileP('tar', ['--listed-incremental', join(out, 'snar'), '-C', src, '-cf', tarPath, 'd']);
    const entries = await parse(readFileSync(tarPath));
    assert.ok(entries.some((e) => e.header.typeflag === 'D' && e.header.type === 'directory'));
    const root = await tempDir(t);
    await applyLayer(root, streamOf(readFileSync(tarPath)), { form: 'plain' });
    assert.equal(readFileSync(join(root, 'd/f.txt'), 'utf8'), 'hello');
  });

  it('a volume label ("V") is not an entry', async (t) => {
    const src = await sourceTree(t);
    const out = await tempDir(t);
    const tarPath = join(out, 'v.tar');
    await execFileP('tar', ['-V', 'my label', '-C', src, '-cf', tarPath, 'd/f.txt']);
    const entries = await parse(readFileSync(tarPath));
    assert.deepEqual(
      entries.map((e) => e.header.name),
      ['d/f.txt'],
    );
  });
});

describe('tar reader: headers', () => {
  it('a global PAX header is skipped; a PAX size overrides the header', async () => {
    const g = Buffer.from('20 path=from-global\n');
    const tar = Buffer.concat([
      headerBlock({ name: 'pax_global_header', type: 'g', size: g.length }),
      Buffer.concat([g, Buffer.alloc(512 - g.length)]),
      entryBlocks(file('real', Buffer.alloc(700, 1), { size: 5, pax: { size: '700' } })),
      Buffer.alloc(1024),
    ]);
    const entries = await parse(tar);
    assert.equal(entries.length, 1);
    assert.equal(entries[0]?.header.name, 'real');
    assert.equal(entries[0]?.body.length, 700);
  });

  it('accepts a checksum computed over signed bytes (historic tars)', async () => {
    const name = 'é-signed'; // bytes >= 0x80 make the signed and unsigned sums differ
    const h = headerBlock({ name, type: '0', size: 0 });
    let signed = 0;
    for (let i = 0; i < 512; i++) {
      const b = i >= 148 && i < 156 ? 0x20 : (h[i] as number);
      signed += b > 127 ? b - 256 : b;
    }
    const bad = headerBlock({ name, type: '0', size: 0, checksum: signed });
    const entries = await parse(Buffer.concat([bad, Buffer.alloc(1024)]));
    assert.equal(entries[0]?.header.name, name);
  });

  it('a name that is not UTF-8 is refused (ERR_UNSUPPORTED)', async () => {
    const h = headerBlock({ name: 'x', type: '0', size: 0 });
    h[0] = 0xff;
    h[1] = 0xfe;
    h.fill(0x20, 148, 156);
    let sum = 0;
    for (const b of h) sum += b;
    h.write(`${sum.toString(8).padStart(6, '0')}\u0000 `, 148, 8, 'latin1');
    await assert.rejects(parse(Buffer.concat([h, Buffer.alloc(1024)])), (e: Error & { code?: string }) => {
      return e.code === 'ERR_UNSUPPORTED' && /UTF-8/.test(e.message);
    });
    await assert.rejects(
      parse(makeTarball([file('ok', '', { pax: { path: Buffer.from([0x61, 0xff, 0x62]) } })])),
      (e: Error & { code?: string }) => e.code === 'ERR_UNSUPPORTED',
    );
  });

  it('a PAX record whose length does not fit is ERR_INVALID_ARCHIVE', async () => {
    const rec = Buffer.from('99 path=x\n');
    const tar = Buffer.concat([
      headerBlock({ name: 'p', type: 'x', size: rec.length }),
      Buffer.concat([rec, Buffer.alloc(512 - rec.length)]),
      entryBlocks(file('a', 'x')),
      Buffer.alloc(1024),
    ]);
    await assert.rejects(parse(tar), (e: Error & { code?: string }) => e.code === 'ERR_INVALID_ARCHIVE');
  });

  it('an extended header at the very end, without its entry, is ERR_INVALID_ARCHIVE', async () => {
    const rec = Buffer.from('11 path=x\n');
    const tar = Buffer.concat([
      headerBlock({ name: 'p', type: 'x', size: rec.length }),
      Buffer.concat([rec, Buffer.alloc(512 - rec.length)]),
    ]);
    await assert.rejects(parse(tar), (e: Error & { code?: string }) => e.code === 'ERR_INVALID_ARCHIVE');
  });
});
