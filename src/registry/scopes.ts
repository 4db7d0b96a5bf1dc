// Token scopes (`repository:app:pull,push`): building, merging and comparing them, so a
// token obtained for one set of scopes is reused for any request it covers.

/** `repository:<name>:<actions>` */
export function repositoryScope(repository: string, actions: readonly string[]): string {
  return `repository:${repository}:${actions.join(',')}`;
}

/** Resource (`type:name`) → set of actions. */
export type ScopeSet = Map<string, Set<string>>;

/** Parse scope strings; entries that do not have the `type:name:actions` form are dropped. */
export function scopeSet(scopes: Iterable<string>): ScopeSet {
  const out: ScopeSet = new Map();
  for (const s of scopes) {
    const last = s.lastIndexOf(':');
    const first = s.indexOf(':');
    if (first <= 0 || last === first) continue;
    const resource = s.slice(0, last);
    const actions = s
      .slice(last + 1)
      .split(',')
      .filter((a) => a !== '');
    let set = out.get(resource);
    if (!set) {
      set = new Set();
      out.set(resource, set);
    }
    for (const a of actions) set.add(a);
  }
  return out;
}

/** Canonical strings of a scope set: sorted resources, sorted actions. */
export function scopeStrings(set: ScopeSet): string[] {
  return [...set.entries()]
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
    .map(([resource, actions]) => `${resource}:${[...actions].sort().join(',')}`);
}

/** The union of several scope lists, canonical. */
export function mergeScopes(...lists: Iterable<string>[]): string[] {
  const all: string[] = [];
  for (const l of lists) all.push(...l);
  return scopeStrings(scopeSet(all));
}

/** Whether `have` grants everything in `want` ('*' grants every action). */
export function coversScopes(have: ScopeSet, want: ScopeSet): boolean {
  for (const [resource, actions] of want) {
    const got = have.get(resource);
    if (!got) return false;
    if (got.has('*')) continue;
    for (const a of actions) if (!got.has(a)) return false;
  }
  return true;
}
