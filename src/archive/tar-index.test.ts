import assert from 'node:assert/strict';
import { mkdir, readFile, truncate, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { test } from 'node:test';
import { StratumError } from '../errors/errors.js';
import { have, readStream, run, tarBytes, writeTar } from '../testing/archive-fixtures.js';
import { tempDir } from '../testing/tmp.js';
import { TarIndex } from './tar-index.js';

const isCode = (code: string) => (e: unknown) => e instanceof StratumError && e.code === code;

test('indexes members and streams their bytes without extracting', async (t) => {
  const dir = await tempDir(t);
  const file = join(dir, 'a.tar');
  await writeTar(file, [
    { name: './dir/', type: 'directory' },
    { name: './dir/one.txt', data: 'one' },
    { name: 'two.bin', data: Buffer.alloc(1000, 7) },
    { name: 'empty', data: '' },
  ]);
  const idx = await TarIndex.open(file);
  t.after(() => idx.close());
  assert.deepEqual(
    [...idx.members()].map((m) => [m.name, m.type, m.size]),
    [
      ['dir', 'directory', 0],
      ['dir/one.txt', 'file', 3],
      ['two.bin', 'file', 1000],
      ['empty', 'file', 0],
    ],
  );
  assert.equal((await readStream(idx.stream(idx.lookup('dir/one.txt')!))).toString(), 'one');
  assert.deepEqual(await readStream(idx.stream(idx.lookup('./two.bin')!)), Buffer.alloc(1000, 7));
  assert.equal((await readStream(idx.stream(idx.lookup('empty')!))).length, 0);
  assert.equal(idx.lookup('dir'), undefined, 'a directory is not a file');
  assert.equal(idx.lookup('missing'), undefined);
});

test('long names: PAX path records (tar-stream) and GNU long names (GNU tar)', async (t) => {
  const dir = await tempDir(t);
  const long = `${'d'.repeat(120)}/${'f'.repeat(150)}.txt`;
  const pax = join(dir, 'pax.tar');
  await writeTar(pax, [{ name: long, data: 'pax body' }]);
  const a = await TarIndex.open(pax);
  t.after(() => a.close());
  assert.equal((await readStream(a.stream(a.lookup(long)!))).toString(), 'pax body');

  if (!(await have('tar'))) {
    t.diagnostic('GNU tar not installed: GNU long-name case not run');
    return;
  }
  const src = join(dir, 'src');
  await mkdir(join(src, 'd'.repeat(120)), { recursive: true });
  await writeFile(join(src, long), 'gnu body');
  const gnu = join(dir, 'gnu.tar');
  const r = await run('tar', ['--format=gnu', '-cf', gnu, '-C', src, long]);
  assert.equal(r.code, 0, r.stderr);
  const g = await TarIndex.open(gnu);
  t.after(() => g.close());
  assert.equal((await readStream(g.stream(g.lookup(long)!))).toString(), 'gnu body');
});

test('links resolve inside the archive only', async (t) => {
  const dir = await tempDir(t);
  const file = join(dir, 'l.tar');
  await writeTar(file, [
    { name: 'blobs/real.tar', data: 'layer' },
    { name: 'legacy/layer.tar', type: 'symlink', linkname: '../blobs/real.tar' },
    { name: 'hard', type: 'link', linkname: 'blobs/real.tar' },
    { name: 'escape', type: 'symlink', linkname: '../../etc/passwd' },
    { name: 'abs', type: 'symlink', linkname: '/etc/passwd' },
    { name: 'loop', type: 'symlink', linkname: 'loop' },
  ]);
  const idx = await TarIndex.open(file);
  t.after(() => idx.close());
  assert.equal(idx.lookup('legacy/layer.tar')?.name, 'blobs/real.tar');
  assert.equal(idx.lookup('hard')?.name, 'blobs/real.tar');
  assert.equal(idx.lookup('escape'), undefined);
  assert.equal(idx.lookup('abs'), undefined);
  assert.equal(idx.lookup('loop'), undefined);
  assert.equal(idx.lookup('../blobs/real.tar'), undefined, 'a lookup with .. never matches');
});

test('hostile: member names with .. or absolute paths make the archive invalid', async (t) => {
  const dir = await tempDir(t);
  for (const name of ['../evil', 'a/../../evil', '/etc/evil']) {
    const file = join(dir, 'h.tar');
    await writeTar(file, [
      { name: 'ok', data: 'x' },
      { name, data: 'evil' },
    ]);
    await assert.rejects(TarIndex.open(file), isCode('ERR_INVALID_ARCHIVE'), name);
  }
  const link = join(dir, 'link.tar');
  await writeTar(link, [{ name: 'x', type: 'link', linkname: '../outside' }]);
  await assert.rejects(TarIndex.open(link), isCode('ERR_INVALID_ARCHIVE'));
});

test('hostile: truncated tar, bad checksum, not a tar, empty file', async (t) => {
  const dir = await tempDir(t);
  const file = join(dir, 't.tar');
  await writeFile(file, await tarBytes([{ name: 'big', data: Buffer.alloc(5000, 1) }]));
  await truncate(file, 512 + 2000);
  await assert.rejects(
    TarIndex.open(file),
    (e) => isCode('ERR_INVALID_ARCHIVE')(e) && /truncated/.test(String(e)),
  );

  await truncate(file, 300); // inside the first header
  await assert.rejects(TarIndex.open(file), isCode('ERR_INVALID_ARCHIVE'));

  const bad = join(dir, 'bad.tar');
  const bytes = await tarBytes([{ name: 'a', data: 'a' }]);
  bytes[0] = 'b'.charCodeAt(0); // name changes, checksum does not
  await writeFile(bad, bytes);
  await assert.rejects(
    TarIndex.open(bad),
    (e) => isCode('ERR_INVALID_ARCHIVE')(e) && /checksum/.test(String(e)),
  );

  const text = join(dir, 'text.tar');
  await writeFile(text, 'this is not a tar archive\n'.repeat(40));
  await assert.rejects(TarIndex.open(text), isCode('ERR_INVALID_ARCHIVE'));

  const empty = join(dir, 'empty.tar');
  await writeFile(empty, '');
  await assert.rejects(TarIndex.open(empty), isCode('ERR_INVALID_ARCHIVE'));
});

test('an archive without the end-of-archive blocks is accepted on a block boundary', async (t) => {
  const dir = await tempDir(t);
  const file = join(dir, 'noend.tar');
  const bytes = await tarBytes([{ name: 'a', data: 'abc' }]);
  await writeFile(file, bytes.subarray(0, 1024)); // header + one data block, no zero blocks
  const idx = await TarIndex.open(file);
  t.after(() => idx.close());
  assert.equal((await readStream(idx.stream(idx.lookup('a')!))).toString(), 'abc');
});

test('read() is bounded and reports ERR_TOO_LARGE', async (t) => {
  const dir = await tempDir(t);
  const file = join(dir, 'r.tar');
  await writeTar(file, [{ name: 'm', data: Buffer.alloc(100) }]);
  const idx = await TarIndex.open(file);
  t.after(() => idx.close());
  const m = idx.lookup('m')!;
  assert.equal((await idx.read(m, 100, 'm')).length, 100);
  await assert.rejects(idx.read(m, 99, 'm'), isCode('ERR_TOO_LARGE'));
  // the file is read positionally: the member's bytes are where the index says
  const raw = await readFile(file);
  assert.deepEqual(raw.subarray(m.offset, m.offset + m.size), Buffer.alloc(100));
});
