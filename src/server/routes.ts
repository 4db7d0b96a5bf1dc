// The URL paths of the distribution API, matched from the end (a repository name may hold
// any number of '/'). Nothing is decoded: a '%' can appear in no valid name, tag or digest,
// so an encoded path simply fails validation later. The parts returned are raw strings;
// handlers validate them before use.

export type Route =
  | { readonly kind: 'base' }
  | { readonly kind: 'catalog' }
  | { readonly kind: 'metrics' }
  | { readonly kind: 'manifest'; readonly name: string; readonly reference: string }
  | { readonly kind: 'blob'; readonly name: string; readonly digest: string }
  | { readonly kind: 'uploads'; readonly name: string }
  | { readonly kind: 'upload'; readonly name: string; readonly id: string }
  | { readonly kind: 'tags'; readonly name: string }
  | { readonly kind: 'referrers'; readonly name: string; readonly digest: string }
  | { readonly kind: 'unknown' };

export type RouteKind = Route['kind'];

/** Methods each route answers. */
export const ROUTE_METHODS: Readonly<Record<RouteKind, readonly string[]>> = {
  base: ['GET', 'HEAD'],
  catalog: ['GET'],
  metrics: ['GET'],
  manifest: ['GET', 'HEAD', 'PUT', 'DELETE'],
  blob: ['GET', 'HEAD', 'DELETE'],
  uploads: ['POST'],
  upload: ['GET', 'PATCH', 'PUT', 'DELETE'],
  tags: ['GET'],
  referrers: ['GET'],
  unknown: [],
};

/** Methods that change the store (refused in read-only mode). */
export const WRITE_METHODS: ReadonlySet<string> = new Set(['PUT', 'POST', 'PATCH', 'DELETE']);

const PATTERNS: readonly [RegExp, (m: RegExpExecArray) => Route][] = [
  [/^\/v2\/(.+)\/blobs\/uploads\/?$/, (m) => ({ kind: 'uploads', name: m[1]! })],
  [/^\/v2\/(.+)\/blobs\/uploads\/([^/]+)$/, (m) => ({ kind: 'upload', name: m[1]!, id: m[2]! })],
  [/^\/v2\/(.+)\/blobs\/([^/]+)$/, (m) => ({ kind: 'blob', name: m[1]!, digest: m[2]! })],
  [/^\/v2\/(.+)\/manifests\/([^/]+)$/, (m) => ({ kind: 'manifest', name: m[1]!, reference: m[2]! })],
  [/^\/v2\/(.+)\/tags\/list$/, (m) => ({ kind: 'tags', name: m[1]! })],
  [/^\/v2\/(.+)\/referrers\/([^/]+)$/, (m) => ({ kind: 'referrers', name: m[1]!, digest: m[2]! })],
];

export function matchRoute(pathname: string): Route {
  if (pathname === '/v2/' || pathname === '/v2') return { kind: 'base' };
  if (pathname === '/v2/_catalog') return { kind: 'catalog' };
  if (pathname === '/metrics') return { kind: 'metrics' };
  if (!pathname.startsWith('/v2/') || pathname.length > 4096) return { kind: 'unknown' };
  for (const [re, make] of PATTERNS) {
    const m = re.exec(pathname);
    if (m) return make(m);
  }
  return { kind: 'unknown' };
}
