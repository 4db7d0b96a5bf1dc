// TEMPORARY stand-in for src/compression/compression.ts until it lands (gzip only).

import type { Duplex } from 'node:stream';
import { createGunzip } from 'node:zlib';
import { StratumError } from '../errors/errors.js';

export function detectCompression(b: Uint8Array): 'gzip' | 'zstd' | 'none' {
  if (b.length >= 2 && b[0] === 0x1f && b[1] === 0x8b) return 'gzip';
  if (b.length >= 4 && b[0] === 0x28 && b[1] === 0xb5 && b[2] === 0x2f && b[3] === 0xfd) return 'zstd';
  return 'none';
}

export function decompressStream(kind: 'gzip' | 'zstd' | 'none'): Duplex {
  if (kind === 'gzip') return createGunzip();
  throw new StratumError('ERR_ZSTD_UNAVAILABLE', 'zstd not available in the shim');
}
