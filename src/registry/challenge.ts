// WWW-Authenticate challenges (RFC 7235): `Bearer realm="…",service="…",scope="…"` and
// `Basic realm="…"`. One header may carry several challenges separated by commas; a new
// challenge starts where a token is followed by a space rather than by '='. Parameter names
// are case-insensitive; values are tokens or quoted strings with backslash escapes.

export interface Challenge {
  /** Lowercased scheme: 'bearer', 'basic', ... */
  readonly scheme: string;
  /** Parameters with lowercased names. */
  readonly params: Readonly<Record<string, string>>;
}

const TOKEN_CHAR = /[!#$%&'*+\-.^_`|~0-9A-Za-z]/;

/** Parse every challenge in the given header values; malformed parts are skipped. */
export function parseChallenges(values: string | readonly string[] | undefined): Challenge[] {
  if (values === undefined) return [];
  const list = typeof values === 'string' ? [values] : values;
  const out: Challenge[] = [];
  for (const v of list) out.push(...parseOne(v.slice(0, 16 * 1024)));
  return out;
}

function parseOne(s: string): Challenge[] {
  const out: Challenge[] = [];
  let i = 0;
  const n = s.length;
  const skipWs = () => {
    while (i < n && (s[i] === ' ' || s[i] === '\t')) i++;
  };
  const readToken = (): string => {
    const start = i;
    while (i < n && TOKEN_CHAR.test(s[i] as string)) i++;
    return s.slice(start, i);
  };
  let current: { scheme: string; params: Record<string, string> } | undefined;
  while (i < n) {
    skipWs();
    while (i < n && s[i] === ',') {
      i++;
      skipWs();
    }
    if (i >= n) break;
    const tok = readToken();
    if (tok === '') {
      i++; // skip a stray character
      continue;
    }
    skipWs();
    if (s[i] === '=' && current !== undefined) {
      // an auth-param of the current challenge
      i++;
      skipWs();
      let value: string;
      if (s[i] === '"') {
        i++;
        let buf = '';
        while (i < n && s[i] !== '"') {
          if (s[i] === '\\' && i + 1 < n) i++;
          buf += s[i];
          i++;
        }
        i++; // closing quote
        value = buf;
      } else {
        value = readToken();
      }
      current.params[tok.toLowerCase()] = value;
      continue;
    }
    // a new challenge: scheme [token68 | params]
    current = { scheme: tok.toLowerCase(), params: {} };
    out.push(current);
  }
  return out;
}

/** The scopes named in a challenge's `scope` parameter (space-separated). */
export function challengeScopes(c: Challenge): string[] {
  const s = c.params.scope;
  return s === undefined ? [] : s.split(' ').filter((x) => x !== '');
}
