// The union model on crafted layers: whiteouts and opaque markers in any order, hard links that
// outlive a name, type changes, implicit directories, per-layer counts, wasted-byte accounting,
// and the same refusals as apply (names that climb out, symlinks in a parent path).

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { dir, file, hardlink, makeTarball, symlink } from '../layer/apply-fixtures.js';
import { unionOf } from './support.test.js';
import { compareNames, type DropReason, type UnionTree } from './union.js';

function paths(tree: UnionTree): string[] {
  return [...tree.walk()].map(([p, n]) => (n.kind === 'dir' ? `${p}/` : p));
}

function drops(): {
  log: string[];
  drop: (i: { path: string; stored: number; layer: number }, why: DropReason, by: number) => void;
} {
  const log: string[] = [];
  return { log, drop: (i, why, by) => log.push(`${i.path}@${i.layer} ${i.stored} ${why} by ${by}`) };
}

describe('UnionTree', () => {
  it('a whiteout removes only what lower layers had, whatever the entry order', () => {
    const d = drops();
    const { tree, layers } = unionOf(
      [
        makeTarball([dir('w'), file('w/a', 'aaaa'), file('w/b', 'bb'), dir('w/sub'), file('w/sub/c', 'c')]),
        makeTarball([
          file('w/sub/new', 'new'), // written before the whiteout of its directory
          { name: 'w/.wh.sub' },
          { name: 'w/.wh.a' },
          file('w/x', 'x'),
          { name: 'w/.wh.x' }, // its own layer's file stays
          { name: 'w/.wh.never' },
        ]),
      ],
      { drop: d.drop, listChanges: true },
    );
    assert.deepEqual(paths(tree), ['w/', 'w/b', 'w/sub/', 'w/sub/new', 'w/x']);
    assert.deepEqual(d.log, ['w/sub/c@0 1 deleted by 1', 'w/a@0 4 deleted by 1']);
    const l2 = layers[1]!;
    assert.equal(l2.whiteouts, 4);
    // w/sub/c (inside the kept w/sub) and w/a; w/.wh.x and w/.wh.never remove nothing
    assert.equal(l2.deleted, 2);
    assert.equal(l2.added, 2); // w/sub/new, w/x
    assert.equal(l2.changed, 0);
    assert.deepEqual(
      l2.paths?.map((p) => `${p.kind} ${p.path}`),
      ['added w/sub/new', 'deleted w/sub/c', 'deleted w/a', 'added w/x'],
    );
  });

  it('an opaque marker hides the lower directory, before or after the layer writes into it', () => {
    const { tree, layers } = unionOf([
      makeTarball([
        dir('o1'),
        file('o1/old', 'o'),
        dir('o2'),
        dir('o2/d'),
        file('o2/d/old', 'o'),
        file('keep', 'k'),
      ]),
      makeTarball([
        file('o1/new', 'n'),
        { name: 'o1/.wh..wh..opq' },
        { name: 'o2/.wh..wh..opq' },
        file('o2/new', 'n'),
      ]),
    ]);
    assert.deepEqual(paths(tree), ['keep', 'o1/', 'o1/new', 'o2/', 'o2/new']);
    assert.equal(layers[1]!.opaques, 2);
    assert.equal(layers[1]!.deleted, 2); // o1/old, o2/d
  });

  it('hard links share the inode; data is wasted only when the last name goes', () => {
    const d = drops();
    const { tree } = unionOf(
      [
        makeTarball([file('a', '12345'), hardlink('b', 'a'), hardlink('c', 'a')]),
        makeTarball([{ name: '.wh.a' }, file('b', 'new b'), hardlink('l2', 'c')]),
        makeTarball([{ name: '.wh.c' }]),
      ],
      { drop: d.drop },
    );
    assert.deepEqual(paths(tree), ['b', 'l2']);
    const l2 = tree.lookup('l2');
    assert.ok(l2?.kind === 'leaf');
    assert.equal(l2.inode.path, 'a'); // still layer 0's file
    assert.equal(l2.inode.links, 1);
    assert.deepEqual(d.log, []); // nothing wasted: l2 still shows the 5 bytes
    unionOf(
      [
        makeTarball([file('a', '12345'), hardlink('b', 'a')]),
        makeTarball([{ name: '.wh.a' }, { name: '.wh.b' }]),
      ],
      {
        drop: d.drop,
      },
    );
    assert.deepEqual(d.log, ['a@0 5 deleted by 1']);
  });

  it('a hard link to a file of a lower layer, and one to a missing file', () => {
    const { tree, layers } = unionOf([
      makeTarball([file('lower', 'x')]),
      makeTarball([hardlink('up', 'lower')]),
    ]);
    assert.equal(layers[1]!.added, 1);
    const up = tree.lookup('up');
    const lower = tree.lookup('lower');
    assert.ok(up?.kind === 'leaf' && lower?.kind === 'leaf');
    assert.equal(up.inode, lower.inode);
    assert.throws(() => unionOf([makeTarball([hardlink('up', 'nothing')])]), {
      code: 'ERR_INVALID_ARCHIVE',
      message: /hard link target "nothing" does not exist/,
    });
    assert.throws(() => unionOf([makeTarball([dir('d'), hardlink('up', 'd')])]), { code: 'ERR_UNSAFE_PATH' });
    // a hard link to itself is skipped, as apply skips it
    assert.equal(unionOf([makeTarball([file('s', 'x'), hardlink('s', 's')])]).layers[0]!.skipped, 1);
  });

  it('type changes shadow what was there; directories merge', () => {
    const d = drops();
    const { tree, layers } = unionOf(
      [
        makeTarball([
          dir('d', { mode: 0o755 }),
          file('d/f', 'ffff'),
          file('f', 'abc'),
          dir('same'),
          dir('meta'),
        ]),
        makeTarball([
          file('d', 'now a file'),
          dir('f'),
          dir('same'), // same metadata: neither added nor changed
          dir('meta', { mode: 0o700, uid: 7 }),
        ]),
      ],
      { drop: d.drop },
    );
    assert.deepEqual(paths(tree), ['d', 'f/', 'meta/', 'same/']);
    assert.deepEqual(d.log.sort(), ['d/f@0 4 shadowed by 1', 'f@0 3 shadowed by 1']);
    assert.equal(layers[1]!.changed, 3); // d, f, meta
    assert.equal(layers[1]!.added, 0);
    const meta = tree.lookup('meta');
    assert.ok(meta?.kind === 'dir');
    assert.equal(meta.mode, 0o700);
    assert.equal(meta.uid, 7);
  });

  it('missing parents are made 0755 root-owned; a file in the way of one is replaced', () => {
    const d = drops();
    const { tree, layers } = unionOf(
      [makeTarball([file('x', 'xx')]), makeTarball([file('a/b/c', 'c'), file('x/y', 'y')])],
      {
        drop: d.drop,
      },
    );
    assert.deepEqual(paths(tree), ['a/', 'a/b/', 'a/b/c', 'x/', 'x/y']);
    const a = tree.lookup('a');
    assert.ok(a?.kind === 'dir' && a.implicit);
    assert.equal(a.mode, 0o755);
    assert.deepEqual(d.log, ['x@0 2 shadowed by 1']);
    assert.equal(layers[1]!.added, 2); // the files; implicit directories are not entries
  });

  it('counts a path once per layer, and wastes what a layer overwrites itself', () => {
    const d = drops();
    const { layers } = unionOf([makeTarball([file('f', '1'), file('f', '22'), file('f', '333')])], {
      drop: d.drop,
    });
    assert.equal(layers[0]!.added, 1);
    assert.equal(layers[0]!.fileBytes, 6);
    assert.deepEqual(d.log, ['f@0 1 shadowed by 0', 'f@0 2 shadowed by 0']);
  });

  it('skips aufs metadata, refuses whiteouts that name nothing', () => {
    const { layers } = unionOf([makeTarball([file('.wh..wh.plnk/1.2', 'x'), file('.wh..wh.aufs', '')])]);
    assert.equal(layers[0]!.skipped, 2);
    assert.equal(layers[0]!.added, 0);
    assert.throws(() => unionOf([makeTarball([{ name: 'a/.wh..' }])]), { code: 'ERR_UNSAFE_PATH' });
  });

  it('refuses names that climb out and writes through symlinks, as apply does', () => {
    assert.throws(() => unionOf([makeTarball([file('../evil', 'x')])]), { code: 'ERR_UNSAFE_PATH' });
    assert.throws(() => unionOf([makeTarball([file('/abs', 'x')])]), { code: 'ERR_UNSAFE_PATH' });
    assert.throws(() => unionOf([makeTarball([symlink('l', '/etc'), file('l/passwd', 'x')])]), {
      code: 'ERR_UNSAFE_PATH',
      message: /"l\/passwd".*symbolic link/,
    });
    // a whiteout through a planted symlink (of a lower layer)
    assert.throws(
      () => unionOf([makeTarball([symlink('l', '/etc')]), makeTarball([{ name: 'l/.wh.passwd' }])]),
      {
        code: 'ERR_UNSAFE_PATH',
      },
    );
    // CVE-2021-29136: a symlink for the root itself
    assert.throws(() => unionOf([makeTarball([symlink('.', '/')])]), { code: 'ERR_UNSAFE_PATH' });
    assert.throws(() => unionOf([makeTarball([file('x', 'x'), hardlink('y', '../x')])]), {
      code: 'ERR_UNSAFE_PATH',
    });
    assert.throws(() => unionOf([makeTarball([symlink('s', '')])]), { code: 'ERR_INVALID_ARCHIVE' });
  });

  it('a root entry sets the root directory', () => {
    const { tree } = unionOf([makeTarball([dir('./', { mode: 0o700, uid: 3 }), file('./a', 'a')])]);
    assert.equal(tree.hasRootEntry, true);
    assert.equal(tree.root.mode, 0o700);
    assert.deepEqual(paths(tree), ['a']);
  });

  it('walks names in UTF-8 byte order', () => {
    const names = ['b', 'a', 'B', '\u{1F600}', '\uFF01', 'a-b', 'a.b'];
    const { tree } = unionOf([makeTarball(names.map((n) => file(n, n)))]);
    const want = [...names].sort((x, y) => Buffer.compare(Buffer.from(x), Buffer.from(y)));
    assert.deepEqual(paths(tree), want);
    assert.ok(compareNames('\u{1F600}', '\uFF01') > 0); // UTF-16 order would say < 0
  });
});
