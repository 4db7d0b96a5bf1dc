// RFC 5988 Link headers, as registries use them for pagination: `<url>; rel="next"`.
// Several links may share one header (comma-separated) or come in several headers.

/** The target of the first link whose rel includes `next`, or undefined. */
export function parseLinkNext(values: string | readonly string[] | undefined): string | undefined {
  if (values === undefined) return undefined;
  const list = typeof values === 'string' ? [values] : values;
  for (const v of list) {
    const s = v.slice(0, 16 * 1024);
    const re = /<([^>]*)>((?:\s*;\s*[A-Za-z0-9*_-]+\s*=\s*(?:"[^"]*"|[^;,]*))*)/g;
    for (let m = re.exec(s); m !== null; m = re.exec(s)) {
      const params = m[2] ?? '';
      const rel = /;\s*rel\s*=\s*(?:"([^"]*)"|([^;,\s]*))/i.exec(params);
      const rels = (rel?.[1] ?? rel?.[2] ?? '').toLowerCase().split(/\s+/);
      if (rels.includes('next')) return m[1];
    }
  }
  return undefined;
}
