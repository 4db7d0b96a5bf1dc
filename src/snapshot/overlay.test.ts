// Overlay mount helpers against the kernel: the three option forms, the 4096-byte page and the
// 500-layer limit, a one-layer read-only mount, awkward paths, mountinfo's escapes.

import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { lstat, mkdir, readdir, readFile, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it, type TestContext } from 'node:test';
import type { StratumError } from '../errors/errors.js';
import { makeTempDir } from '../testing/tmp.js';
import {
  decodeMountField,
  MAX_MOUNT_OPTIONS,
  mountOverlay,
  mountsUnder,
  parseMountInfo,
  planOverlayOptions,
  unmount,
} from './overlay.js';

const skip = process.geteuid?.() === 0 ? undefined : 'overlay mounts need root';
const hex = (i: number): string => i.toString(16).padStart(64, '0');

/** A temp dir whose mounts are undone (lazily) before it is removed when the test ends. */
async function scratch(t: TestContext): Promise<string> {
  const { path, cleanup } = await makeTempDir();
  t.after(async () => {
    for (const m of await mountsUnder(path)) await unmount(m, { lazy: true });
    await cleanup();
  });
  return path;
}

describe('planOverlayOptions', () => {
  it('uses absolute paths while they fit', () => {
    const p = planOverlayOptions(['/s/a/fs', '/s/b/fs'], '/c/u', '/c/w');
    assert.deepEqual(p, {
      form: 'absolute',
      cwd: '',
      options: 'lowerdir=/s/a/fs:/s/b/fs,upperdir=/c/u,workdir=/c/w',
    });
  });

  it('goes relative to the common parent when absolute paths are too long', () => {
    const lowers = Array.from({ length: 50 }, (_, i) => `/var/lib/stratum/snapshots/${hex(i)}/fs`);
    const p = planOverlayOptions(lowers, undefined, undefined);
    assert.equal(p.form, 'relative');
    assert.equal(p.cwd, '/var/lib/stratum/snapshots');
    assert.ok(p.options.startsWith(`lowerdir=${hex(0)}/fs:${hex(1)}/fs`));
    assert.ok(p.options.length <= MAX_MOUNT_OPTIONS);
  });

  it('uses numbered links for 500 snapshot layers', () => {
    const lowers = Array.from({ length: 500 }, (_, i) => `/var/lib/stratum/snapshots/${hex(i)}/fs`);
    const p = planOverlayOptions(
      lowers,
      '/var/lib/stratum/containers/x/upper',
      '/var/lib/stratum/containers/x/work',
    );
    assert.equal(p.form, 'links');
    assert.equal(p.links?.length, 500);
    assert.deepEqual(p.links?.[499], ['499', lowers[499]]);
    assert.ok(p.options.startsWith('lowerdir=0:1:2:'));
    assert.ok(p.options.length < 2100, `${p.options.length}`);
  });

  it('never puts `,` `:` or `\\` in the options', () => {
    const p = planOverlayOptions(['/a,b/fs', '/c/fs'], '/u:x', '/w');
    assert.equal(p.form, 'links');
    assert.equal(p.options, 'lowerdir=0:1,upperdir=u,workdir=/w');
    assert.deepEqual(p.links, [
      ['0', '/a,b/fs'],
      ['1', '/c/fs'],
      ['u', '/u:x'],
    ]);
  });

  it('refuses what cannot fit even with links', () => {
    const long = `/${'x'.repeat(2500)}`;
    assert.throws(
      () => planOverlayOptions(['/a', '/b'], `${long}/u`, `${long}/w`),
      (e: StratumError) => e.code === 'ERR_INVALID_ARGUMENT' && /4095/.test(e.message),
    );
  });
});

describe('mountinfo', () => {
  it('decodes octal escapes, and leaves other backslashes alone', () => {
    assert.equal(decodeMountField(Buffer.from('/a\\040b\\011c\\012d\\134e')), '/a b\tc\nd\\e');
    assert.equal(decodeMountField(Buffer.from('/x\\09y\\')), '/x\\09y\\');
    assert.equal(decodeMountField(Buffer.from('/caf\xc3\xa9', 'latin1')), '/café');
  });

  it('reads the mount point field of each line', () => {
    const text = Buffer.from(
      '22 1 0:21 / /proc rw,nosuid - proc proc rw\n' +
        '90 22 0:50 / /mnt/with\\040space rw shared:1 - tmpfs tmpfs rw\n' +
        '91 22 0:51 /sub /mnt/x rw - overlay overlay rw,lowerdir=a:b\n',
    );
    assert.deepEqual(parseMountInfo(text), ['/proc', '/mnt/with space', '/mnt/x']);
  });
});

describe('overlay mounts', { skip }, () => {
  it('mountsUnder finds a mount whose path has a space, tab, newline and backslash', async (t) => {
    const dir = await scratch(t);
    const target = join(dir, 'a b\tc\nd\\e');
    await mkdir(target);
    execFileSync('mount', ['-t', 'tmpfs', 'tmpfs', target]);
    assert.deepEqual(await mountsUnder(dir), [target]);
    assert.deepEqual(await mountsUnder(`${dir}/a`), []); // a prefix of a name is not a parent
    await unmount(target);
    assert.deepEqual(await mountsUnder(dir), []);
    await unmount(target); // not mounted: nothing to do
    await unmount(join(dir, 'missing'));
  });

  it('mounts 500 tiny layers (top first wins), refuses 501 clearly', async (t) => {
    const dir = await scratch(t);
    const base = join(dir, 'snapshots');
    const lowers: string[] = [];
    for (let i = 0; i < 501; i++) {
      const fs = join(base, hex(i), 'fs');
      await mkdir(fs, { recursive: true });
      await writeFile(join(fs, `f${i}`), `${i}\n`);
      await writeFile(join(fs, 'same'), `${i}\n`);
      lowers.push(fs);
    }
    const target = join(dir, 'merged');
    await mkdir(target);
    // top first: the highest layer is lowers[499]
    const top500 = lowers.slice(0, 500).reverse();
    const plan = await mountOverlay({ lowers: top500, target });
    assert.equal(plan.form, 'links');
    assert.equal((await readdir(target)).length, 501);
    assert.equal(await readFile(join(target, 'same'), 'utf8'), '499\n');
    assert.equal(await readFile(join(target, 'f0'), 'utf8'), '0\n');
    // the links are gone, the mount stays whole
    assert.ok(plan.cwd.startsWith(join(tmpdir(), 'stratum-ovl-')), plan.cwd);
    await assert.rejects(lstat(plan.cwd), { code: 'ENOENT' });
    assert.equal(await readFile(join(target, 'f250'), 'utf8'), '250\n');
    await assert.rejects(writeFile(join(target, 'new'), 'x'), { code: 'EROFS' });
    await unmount(target);

    await assert.rejects(
      mountOverlay({ lowers: [...lowers].reverse(), target }),
      (e: StratumError) =>
        e.code === 'ERR_INVALID_ARGUMENT' && /501 layers/.test(e.message) && /at most 500/.test(e.message),
    );
    assert.deepEqual(await mountsUnder(target), []);
  });

  it('the relative form mounts (cwd = the common parent)', async (t) => {
    const dir = await scratch(t);
    const lowers: string[] = [];
    for (let i = 0; i < 60; i++) {
      const fs = join(dir, 'snapshots', hex(i), 'fs');
      await mkdir(fs, { recursive: true });
      await writeFile(join(fs, 'same'), `${i}\n`);
      lowers.push(fs);
    }
    const target = join(dir, 'merged');
    await mkdir(target);
    const plan = await mountOverlay({ lowers, target });
    assert.equal(plan.form, 'relative');
    assert.equal(await readFile(join(target, 'same'), 'utf8'), '0\n');
  });

  it('the page limit is where the kernel puts it: options of exactly 4095 bytes mount', async (t) => {
    const dir = await scratch(t);
    // two lowers whose absolute option string is exactly MAX_MOUNT_OPTIONS long
    const first = join(dir, 'a');
    const left = MAX_MOUNT_OPTIONS - `lowerdir=${first}:${dir}/`.length;
    // components of 200 bytes (NAME_MAX is 255)
    const name = Array.from({ length: left }, (_, i) =>
      (i + 1) % 201 === 0 && i !== left - 1 ? '/' : 'b',
    ).join('');
    const lowers = [first, join(dir, name)];
    assert.equal(`lowerdir=${lowers.join(':')}`.length, MAX_MOUNT_OPTIONS);
    for (const l of lowers) await mkdir(l, { recursive: true });
    await writeFile(join(lowers[1] as string, 'x'), 'bottom');
    const target = join(dir, 'm');
    await mkdir(target);
    const plan = await mountOverlay({ lowers, target });
    assert.equal(plan.form, 'absolute');
    assert.equal(await readFile(join(target, 'x'), 'utf8'), 'bottom');
    // one byte more does not fit a page: another form is used
    assert.notEqual(
      planOverlayOptions([`${lowers[0]}x`, lowers[1] as string], undefined, undefined).form,
      'absolute',
    );
  });

  it('one read-only layer: mounts, hides its whiteouts, refuses writes', async (t) => {
    const dir = await scratch(t);
    const lower = join(dir, 'l');
    await mkdir(lower);
    await writeFile(join(lower, 'a'), 'a');
    execFileSync('mknod', [join(lower, 'gone'), 'c', '0', '0']);
    const target = join(dir, 'm');
    await mkdir(target);
    await mountOverlay({ lowers: [lower], target });
    assert.deepEqual(await readdir(target), ['a']);
    await assert.rejects(writeFile(join(target, 'b'), 'b'), { code: 'EROFS' });
  });

  it('upper and work with `,` and `:` in their paths; writes land in the upper', async (t) => {
    const dir = await scratch(t);
    const lower = join(dir, 'lower,1');
    const upper = join(dir, 'up:per');
    const work = join(dir, 'wo,rk');
    for (const d of [lower, upper, work]) await mkdir(d);
    await writeFile(join(lower, 'a'), 'lower');
    const target = join(dir, 'm');
    await mkdir(target);
    const plan = await mountOverlay({ lowers: [lower], upper, work, target });
    assert.equal(plan.form, 'links');
    await writeFile(join(target, 'a'), 'changed');
    assert.equal(await readFile(join(upper, 'a'), 'utf8'), 'changed');
    assert.equal(await readFile(join(lower, 'a'), 'utf8'), 'lower');
  });

  it('says what is wrong before mounting, and what mount said after', async (t) => {
    const dir = await scratch(t);
    const target = join(dir, 'm');
    await mkdir(target);
    await assert.rejects(mountOverlay({ lowers: [], target }), { code: 'ERR_INVALID_ARGUMENT' });
    await assert.rejects(
      mountOverlay({ lowers: [join(dir, 'nope')], target }),
      (e: StratumError) =>
        e.code === 'ERR_INVALID_ARGUMENT' && /lower layer 1 of 1 .* does not exist/.test(e.message),
    );
    await mkdir(join(dir, 'l'));
    await assert.rejects(mountOverlay({ lowers: [join(dir, 'l')], upper: join(dir, 'l'), target }), {
      code: 'ERR_INVALID_ARGUMENT',
    });
    // work inside upper: the kernel refuses
    await mkdir(join(dir, 'u/w'), { recursive: true });
    await assert.rejects(
      mountOverlay({ lowers: [join(dir, 'l')], upper: join(dir, 'u'), work: join(dir, 'u/w'), target }),
      (e: StratumError) => e.code === 'ERR_IO' && /mounting an overlay/.test(e.message),
    );
    assert.deepEqual(await mountsUnder(target), []);
  });
});
