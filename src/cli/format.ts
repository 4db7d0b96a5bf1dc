// Output helpers shared by the commands: help text, aligned tables, short digests.

/** Print a command's summary, usage and details; returns exit code 0. */
export function help(
  ctx: { readonly stdout: NodeJS.WritableStream },
  c: { readonly usage: string; readonly summary: string },
  detail = '',
): number {
  ctx.stdout.write(`${c.summary}\n\nusage: ${c.usage}\n${detail}`);
  return 0;
}

/** Columns padded to their widest cell and `gap` spaces apart; columns in `right` are right-aligned. */
export function formatTable(
  rows: readonly (readonly string[])[],
  right: ReadonlySet<number> = new Set(),
  gap = 2,
): string {
  const widths = (rows[0] ?? []).map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length)));
  return rows
    .map((r) =>
      r
        .map((c, i) => {
          if (i === r.length - 1) return c;
          const w = widths[i] as number;
          return `${right.has(i) ? c.padStart(w) : c.padEnd(w)}${' '.repeat(gap)}`;
        })
        .join('')
        .trimEnd(),
    )
    .join('\n')
    .concat('\n');
}

/** The first 12 hex characters of a digest, as docker shows IDs. */
export function shortDigest(digest: string): string {
  const i = digest.indexOf(':');
  return digest.slice(i + 1, i + 13);
}
