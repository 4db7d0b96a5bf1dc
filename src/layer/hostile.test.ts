// The hostile corpus: crafted layers that try to write, link, delete or chmod outside the
// root. Each is named after its advisory where there is one, runs with a canary directory
// around the root (listed with content hashes, modes and mtimes before and after: not one
// byte may change outside the root), and must fail with ERR_UNSAFE_PATH naming the entry (or
// ERR_TOO_LARGE for bombs). A few cases are legal layers that older extractors got wrong:
// they must succeed, and still leave the canary alone.

import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { lstatSync, readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { chmod, mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { StratumError } from '../errors/errors.js';
import { tempDir } from '../testing/tmp.js';
import { type ApplyOptions, applyLayer } from './apply.js';
import {
  dir,
  type FixtureEntry,
  file,
  hardlink,
  headerBlock,
  makeTarball,
  streamOf,
  symlink,
} from './apply-fixtures.js';

interface Sandbox {
  readonly base: string;
  readonly root: string;
  /** A directory outside the root with a secret file and a subdirectory. */
  readonly canary: string;
}

async function sandbox(t: { after: (fn: () => Promise<void>) => void }): Promise<Sandbox> {
  const base = await tempDir(t, 'stratum-hostile-');
  const canary = join(base, 'canary');
  await mkdir(join(canary, 'dir'), { recursive: true });
  await writeFile(join(canary, 'secret.txt'), 'secret');
  await chmod(join(canary, 'secret.txt'), 0o600);
  await writeFile(join(canary, 'dir', 'file'), 'file');
  await writeFile(join(base, 'sibling.txt'), 'sibling');
  await mkdir(join(base, 'root'));
  return { base, root: join(base, 'root'), canary };
}

/** Everything under `base` except the root: type, mode, owner, size, content hash, link, mtime. */
function listOutside(base: string): string[] {
  const out: string[] = [];
  const walk = (rel: string): void => {
    const abs = rel === '' ? base : join(base, rel);
    const st = lstatSync(abs);
    let extra = '';
    if (st.isFile()) extra = createHash('sha256').update(readFileSync(abs)).digest('hex');
    if (st.isSymbolicLink()) extra = readlinkSync(abs);
    out.push(
      `${rel || '.'} ${st.mode.toString(8)} ${st.uid}:${st.gid} ${st.size} ${st.mtimeMs} ${st.nlink} ${extra}`,
    );
    if (st.isDirectory()) {
      for (const name of readdirSync(abs).sort()) {
        const child = rel === '' ? name : `${rel}/${name}`;
        if (child !== 'root') walk(child);
      }
    }
  };
  walk('');
  return out;
}

type Layer = readonly FixtureEntry[] | Buffer;

interface Case {
  /** Lower layers applied first (well-formed, or planting symlinks). */
  readonly lowers?: (s: Sandbox) => Layer[];
  readonly layer: (s: Sandbox) => Layer;
  readonly opts?: Partial<ApplyOptions>;
}

async function run(s: Sandbox, c: Case): Promise<unknown> {
  const opts: ApplyOptions = { form: 'plain', ...c.opts };
  for (const l of c.lowers?.(s) ?? []) {
    await applyLayer(s.root, streamOf(Buffer.isBuffer(l) ? l : makeTarball(l)), { form: opts.form });
  }
  const l = c.layer(s);
  try {
    await applyLayer(s.root, streamOf(Buffer.isBuffer(l) ? l : makeTarball(l), 4096), opts);
  } catch (e) {
    return e;
  }
  return undefined;
}

let refusedCount = 0;

/** A case that must be refused with `code`, naming `entry`, with nothing changed outside the root. */
function refused(
  name: string,
  entry: string | ((s: Sandbox) => string),
  c: Case,
  code = 'ERR_UNSAFE_PATH',
): void {
  refusedCount++;
  it(name, async (t) => {
    const s = await sandbox(t);
    const before = listOutside(s.base);
    const e = await run(s, c);
    assert.deepEqual(listOutside(s.base), before, 'something outside the root changed');
    assert.ok(e instanceof StratumError, `expected ${code}, got ${e instanceof Error ? e.stack : String(e)}`);
    assert.equal(e.code, code, e.message);
    const want = typeof entry === 'string' ? entry : entry(s);
    if (code === 'ERR_UNSAFE_PATH')
      assert.equal((e as StratumError & { path: string }).path, want, e.message);
    assert.ok(e.message.includes(JSON.stringify(want)), `the message names the entry: ${e.message}`);
  });
}

/** A legal layer that naive extractors mishandle: it must apply, and leave the outside alone. */
function applied(name: string, c: Case, check: (s: Sandbox) => void): void {
  it(name, async (t) => {
    const s = await sandbox(t);
    const before = listOutside(s.base);
    const e = await run(s, c);
    assert.equal(e, undefined, e instanceof Error ? e.stack : String(e));
    assert.deepEqual(listOutside(s.base), before, 'something outside the root changed');
    check(s);
  });
}

describe('hostile layers: names', () => {
  refused('path traversal: "../escape.txt"', '../escape.txt', {
    layer: () => [file('../escape.txt', 'PWNED')],
  });
  refused('path traversal hidden in the middle: "a/../../escape.txt"', 'a/../../escape.txt', {
    layer: () => [dir('a/'), file('a/../../escape.txt', 'PWNED')],
  });
  refused('an absolute name is refused by default', (s) => `${s.canary}/secret.txt`, {
    layer: (s) => [file(`${s.canary}/secret.txt`, 'PWNED')],
  });
  refused(
    'GHSA-3jfq-g458-7qm9 (CVE-2021-32804): repeated path roots "////..."',
    (s) => `////${s.canary}/pwned`,
    {
      layer: (s) => [file(`////${s.canary}/pwned`, 'PWNED', { pax: { path: `////${s.canary}/pwned` } })],
    },
  );
  refused('GNU long name (L) with ".."', '../gnu-escape.txt', {
    layer: () => [file('../gnu-escape.txt', 'PWNED', { gnuLongName: true, format: 'gnu' })],
  });
  refused('PAX path with ".." over a harmless ustar name', '../pax-escape.txt', {
    layer: () => [file('harmless', 'PWNED', { pax: { path: '../pax-escape.txt' } })],
  });
  applied(
    'with absoluteNames: "strip" an absolute name lands inside the root',
    { layer: (s) => [file(`${s.canary}/secret.txt`, 'mine')], opts: { absoluteNames: 'strip' } },
    (s) => assert.equal(readFileSync(join(s.root, s.canary, 'secret.txt'), 'utf8'), 'mine'),
  );
});

describe('hostile layers: the root itself', () => {
  refused('CVE-2021-29136 (umoci GHSA-9m95-8hx6-7p9v): a symlink named "." replacing the root', '.', {
    layer: (s) => [symlink('.', s.canary), file('pwned', 'PWNED')],
  });
  refused('CVE-2021-29136 variant: a symlink named "./"', './', {
    layer: (s) => [symlink('./', s.canary), file('pwned', 'PWNED')],
  });
  refused('CVE-2021-29136 variant: a symlink named "/" (absolute)', '/', {
    layer: (s) => [symlink('/', s.canary), file('pwned', 'PWNED')],
  });
  refused('CVE-2021-29136 variant: the root as a regular file "."', '.', {
    layer: () => [file('.', 'PWNED')],
  });
  refused('a hard link to the root directory', 'x', { layer: () => [hardlink('x', '.')] });
});

describe('hostile layers: symlinks in parent paths', () => {
  refused('a symlink to an outside directory, then a file through it', 'evil/pwned', {
    layer: (s) => [symlink('evil', s.canary), file('evil/pwned', 'PWNED')],
  });
  refused('a relative symlink climbing out, then a file through it', 'evil/pwned', {
    layer: () => [symlink('evil', '../canary'), file('evil/pwned', 'PWNED')],
  });
  refused('a symlink chain a -> b -> ../canary, then a file through it', 'a/pwned', {
    layer: () => [symlink('b', '../canary'), symlink('a', 'b'), file('a/pwned', 'PWNED')],
  });
  refused(
    'GHSA-r628-mhmh-qjhw (CVE-2021-32803): a directory, then a symlink of the same name, then a file through it',
    'a/pwned',
    { layer: (s) => [dir('a/'), file('a/ok', 'ok'), symlink('a', s.canary), file('a/pwned', 'PWNED')] },
  );
  refused(
    'GHSA-9r2w-394v-53qc (CVE-2021-37701): the same directory spelled two ways ("a//", symlink "a/")',
    'a/dir/pwned',
    { layer: (s) => [dir('a//'), symlink('a/', s.canary), file('a/dir/pwned', 'PWNED')] },
  );
  refused(
    'GHSA-qq89-hq3f-393p (CVE-2021-37712): a directory named by PAX, replaced by a symlink named in the header',
    'x/y/pwned',
    {
      layer: (s) => [
        dir('placeholder/', { pax: { path: './x/./y/' } }),
        symlink('x/y', s.canary),
        file('x/y/pwned', 'PWNED', { gnuLongName: true, format: 'gnu' }),
      ],
    },
  );
  refused('a symlink planted by a lower layer in a parent path', 'usr/pwned', {
    lowers: (s) => [[symlink('usr', s.canary)]],
    layer: () => [file('usr/pwned', 'PWNED')],
  });
  refused('a directory entry through a lower layer symlink', 'usr/newdir/', {
    lowers: (s) => [[symlink('usr', s.canary)]],
    layer: () => [dir('usr/newdir/', { mode: 0o777 })],
  });
  applied(
    'a symlink then a regular file of the same name: the file replaces the link (no write through)',
    { layer: (s) => [symlink('victim', join(s.canary, 'secret.txt')), file('victim', 'PWNED')] },
    (s) => assert.equal(readFileSync(join(s.root, 'victim'), 'utf8'), 'PWNED'),
  );
  applied(
    'GHSA-c72p-9xmj-rx3w (CVE-2021-32760): directory metadata is never applied through the symlink that replaced it',
    { layer: (s) => [dir('a/', { mode: 0o777, mtime: 1 }), symlink('a', join(s.canary, 'dir'))] },
    (s) => assert.ok(lstatSync(join(s.root, 'a')).isSymbolicLink()),
  );
  applied(
    'a fifo (made later, in a batch), then its directory replaced by a symlink: nothing lands outside',
    {
      layer: (s) => [
        dir('a/'),
        { name: 'a/fifo', type: '6' },
        file('a/x', 'x', { pax: { 'SCHILY.xattr.user.k': 'v' } }),
        symlink('a', s.canary),
      ],
    },
    (s) => assert.ok(lstatSync(join(s.root, 'a')).isSymbolicLink()),
  );
  applied(
    'a symlink pointing outside is only data',
    { layer: () => [dir('etc/'), symlink('etc/passwd', '/etc/passwd'), symlink('up', '../../..')] },
    (s) => assert.equal(readlinkSync(join(s.root, 'etc/passwd')), '/etc/passwd'),
  );
});

describe('hostile layers: hard links', () => {
  refused('GHSA-8qq5-rm4j-mr97: a hard link to an absolute path', 'exploit_hard', {
    layer: (s) => [hardlink('exploit_hard', join(s.canary, 'secret.txt'))],
  });
  refused('GHSA-8qq5-rm4j-mr97: a hard link climbing out with ".."', 'sub/exploit_sub', {
    layer: () => [dir('sub/'), hardlink('sub/exploit_sub', '../secret.txt')],
  });
  refused('a hard link whose PAX linkpath climbs out', 'h', {
    layer: () => [
      file('harmless', 'x'),
      hardlink('h', 'harmless', { pax: { linkpath: '../canary/secret.txt' } }),
    ],
  });
  refused('a hard link through a symlink planted by the same layer', 'x', {
    layer: (s) => [symlink('lnk', s.canary), hardlink('x', 'lnk/secret.txt')],
  });
  refused('a hard link through a symlink planted by a lower layer', 'x', {
    lowers: (s) => [[symlink('lnk', s.canary)]],
    layer: () => [hardlink('x', 'lnk/secret.txt')],
  });
  applied(
    'CVE-2018-20834 pattern: a hard link, then a file of the same name, does not write through',
    { layer: () => [file('orig', 'original'), hardlink('alias', 'orig'), file('alias', 'PWNED')] },
    (s) => assert.equal(readFileSync(join(s.root, 'orig'), 'utf8'), 'original'),
  );
});

describe('hostile layers: whiteouts', () => {
  refused('a whiteout climbing out: "../.wh.secret.txt"', '../.wh.secret.txt', {
    layer: () => [file('../.wh.secret.txt')],
  });
  refused('the whiteout ".wh..." (its target is "..")', '.wh...', { layer: () => [file('.wh...')] });
  refused('the whiteout "a/.wh.." (its target is the directory itself)', 'a/.wh..', {
    layer: () => [dir('a/'), file('a/.wh..')],
  });
  refused('a whiteout through a symlink would delete outside', 'lnk/.wh.secret.txt', {
    layer: (s) => [symlink('lnk', s.canary), file('lnk/.wh.secret.txt')],
  });
  refused(
    'an opaque marker through a lower layer symlink would empty a directory outside',
    'lnk/.wh..wh..opq',
    {
      lowers: (s) => [[symlink('lnk', s.canary)]],
      layer: () => [file('lnk/.wh..wh..opq')],
    },
  );
  refused('overlay form: a whiteout through a symlink', 'lnk/.wh.secret.txt', {
    layer: (s) => [symlink('lnk', s.canary), file('lnk/.wh.secret.txt')],
    opts: { form: 'overlay' },
  });
});

describe('hostile layers: devices and bombs', () => {
  refused('a device node where devices are not allowed', 'dev/kmem', {
    layer: () => [{ name: 'dev/kmem', type: '3', devmajor: 1, devminor: 2 }],
    opts: { devices: 'reject' },
  });
  refused(
    'tar bomb: more entries than allowed',
    'f100',
    { layer: () => Array.from({ length: 1000 }, (_, i) => file(`f${i}`, 'x')), opts: { maxEntries: 100 } },
    'ERR_TOO_LARGE',
  );
  refused(
    'tar bomb: more bytes than allowed',
    'big3',
    {
      layer: () => Array.from({ length: 5 }, (_, i) => file(`big${i}`, Buffer.alloc(300_000))),
      opts: { maxBytes: 1_000_000 },
    },
    'ERR_TOO_LARGE',
  );
  refused(
    'sparse bomb: a 1 TiB file stored in one block',
    'huge.img',
    {
      layer: () => {
        // old GNU sparse: one 512-byte segment at the end of a 1 TiB file
        const h = headerBlock({ name: 'huge.img', type: 'S', size: 512, format: 'gnu' });
        const tib = 2 ** 40;
        const b256 = (off: number, n: number): void => {
          h.fill(0, off, off + 12);
          h.writeUIntBE(n, off + 6, 6);
          h[off] = 0x80;
        };
        b256(386, tib - 512); // segment offset
        h.write((512).toString(8).padStart(11, '0'), 398, 11, 'latin1'); // segment length
        b256(483, tib); // real size
        h.fill(0x20, 148, 156);
        let sum = 0;
        for (const b of h) sum += b;
        h.write(`${sum.toString(8).padStart(6, '0')}\u0000 `, 148, 8, 'latin1');
        return Buffer.concat([h, Buffer.alloc(512, 1), Buffer.alloc(1024)]);
      },
      opts: { maxBytes: 1_000_000_000 },
    },
    'ERR_TOO_LARGE',
  );
});

it('the corpus has at least 20 refused cases', () => {
  assert.ok(refusedCount >= 20, `only ${refusedCount} refused cases`);
});
