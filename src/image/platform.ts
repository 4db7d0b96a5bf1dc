// Platforms: parse `os/arch[/variant]`, this machine's platform, and matching an index entry.

import { StratumError } from '../errors/errors.js';
import type { Descriptor, Platform } from '../spec/types.js';

const ARCH: Readonly<Record<string, string>> = {
  x64: 'amd64',
  arm64: 'arm64',
  arm: 'arm',
  ia32: '386',
  ppc64: 'ppc64le',
  s390x: 's390x',
  riscv64: 'riscv64',
  loong64: 'loong64',
  mips: 'mips',
  mipsel: 'mipsle',
};

/** The platform of this machine, as OCI names it (linux/amd64, linux/arm64/v8, ...). */
export function hostPlatform(): Platform {
  const architecture = ARCH[process.arch] ?? process.arch;
  const os = process.platform === 'win32' ? 'windows' : process.platform;
  if (architecture === 'arm64') return { os, architecture, variant: 'v8' };
  if (architecture === 'arm') return { os, architecture, variant: 'v7' };
  return { os, architecture };
}

/** Parse `os/arch[/variant]`. */
export function parsePlatform(s: string): Platform {
  const parts = s.split('/');
  const [os, architecture, variant] = parts;
  const ok = /^[a-z0-9._-]+$/;
  if (
    parts.length < 2 ||
    parts.length > 3 ||
    !os ||
    !architecture ||
    !ok.test(os) ||
    !ok.test(architecture)
  ) {
    throw new StratumError(
      'ERR_INVALID_ARGUMENT',
      `invalid platform ${JSON.stringify(s)}: want os/arch[/variant], e.g. linux/amd64`,
    );
  }
  if (variant !== undefined && !ok.test(variant)) {
    throw new StratumError('ERR_INVALID_ARGUMENT', `invalid platform ${JSON.stringify(s)}: bad variant`);
  }
  return variant ? { os, architecture, variant } : { os, architecture };
}

export function formatPlatform(p: Platform): string {
  return [p.os, p.architecture, p.variant].filter(Boolean).join('/');
}

function normVariant(p: Platform): string | undefined {
  if (p.architecture === 'arm64' && (p.variant === undefined || p.variant === 'v8')) return 'v8';
  return p.variant;
}

/** Does `have` satisfy `want`? A wanted variant must match (arm64 v8 == no variant). */
export function platformMatches(have: Platform, want: Platform): boolean {
  if (have.os !== want.os || have.architecture !== want.architecture) return false;
  const wv = normVariant(want);
  if (wv === undefined) return true;
  return normVariant(have) === wv;
}

/**
 * Pick the manifest for `want` from an index's entries: an exact variant match first, then
 * (when no variant is wanted) the first entry with the same os/arch. Attestation manifests
 * (platform unknown/unknown) are never picked.
 */
export function selectPlatform(manifests: readonly Descriptor[], want: Platform): Descriptor | undefined {
  const candidates = manifests.filter((m) => m.platform !== undefined && platformMatches(m.platform, want));
  return candidates[0];
}
