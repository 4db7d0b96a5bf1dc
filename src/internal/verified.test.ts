import assert from 'node:assert/strict';
import { PassThrough } from 'node:stream';
import { it } from 'node:test';
import { isVerified, markVerified } from './verified.js';

const A = `sha256:${'a'.repeat(64)}`;
const B = `sha256:${'b'.repeat(64)}`;

it('a mark holds for exactly one digest and size', () => {
  const s = markVerified(new PassThrough(), A, 10);
  assert.equal(isVerified(s, A, 10), true);
  assert.equal(isVerified(s, B, 10), false);
  assert.equal(isVerified(s, A, 11), false);
  assert.equal(isVerified(new PassThrough(), A, 10), false);
});

it('anything that is not an object is never verified', () => {
  for (const v of [undefined, null, 0, A, new Uint8Array(10)]) assert.equal(isVerified(v, A, 10), false);
});
