import assert from 'node:assert/strict';
import { PassThrough } from 'node:stream';
import { it } from 'node:test';
import type { CopyEvent } from '../copy/copy.js';
import { digestBytes } from '../digest/digest.js';
import { formatBytes, ProgressPrinter } from './progress.js';

const layer = {
  mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip',
  digest: digestBytes('l'),
  size: 2_500_000,
};
const events: CopyEvent[] = [
  { type: 'resolved', descriptor: layer },
  { type: 'blob-start', descriptor: layer },
  { type: 'blob-progress', descriptor: layer, bytes: 1_000_000 },
  { type: 'blob-done', descriptor: layer, action: 'copied', result: layer },
  { type: 'blob-done', descriptor: { ...layer, digest: digestBytes('x') }, action: 'exists', result: layer },
];

function render(mode: 'tty' | 'plain' | 'json'): string {
  const out = new PassThrough();
  let text = '';
  out.on('data', (d: Buffer) => {
    text += d;
  });
  const p = new ProgressPrinter(mode, out);
  for (const e of events) p.onEvent(e);
  p.finish();
  return text;
}

it('prints plain lines, JSON lines, or redrawn bars', () => {
  const plain = render('plain');
  assert.match(plain, /: Copied 2\.50MB\n/);
  assert.match(plain, /: Already exists\n/);
  assert.doesNotMatch(plain, /\x1b\[/, 'no escape codes off a TTY');
  const json = render('json')
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as { event: string });
  assert.deepEqual(
    json.map((j) => j.event),
    ['resolved', 'blob-start', 'blob-done', 'blob-done'],
  );
  const tty = render('tty');
  assert.match(tty, /\x1b\[2K/);
  assert.match(tty, /Already exists/);
  assert.equal(formatBytes(999), '999B');
  assert.equal(formatBytes(1_234_567), '1.23MB');
});
