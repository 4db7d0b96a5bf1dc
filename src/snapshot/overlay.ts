// Overlay mounts over snapshot directories: `mount -t overlay` (util-linux) with the lower
// layers, an optional upper and work directory; `umount`; and the mounts below a path, read
// from /proc/self/mountinfo.
//
// Two kernel limits shape the lowerdir option:
// - overlayfs stacks at most 500 lower layers (OVL_MAX_STACK); more are refused here with a
//   clear error instead of the kernel's bare EINVAL.
// - mount(2) copies its options from one page (4096 bytes, NUL included). 500 absolute
//   snapshot paths (~90 bytes each) need ten times that. The option string is made in the
//   first of these forms that fits:
//     1. absolute paths, as given (readable in /proc/self/mountinfo);
//     2. paths relative to the lowers' common parent, `mount` run with that as its working
//        directory (the kernel resolves a relative lowerdir against the mounting process's
//        cwd) — `<64 hex>/fs`, enough for ~55 snapshot layers;
//     3. a temporary directory of symlinks named 0, 1, … (one per layer, and `u`, `w` for the
//        upper and work directories when their paths are awkward), `mount` run inside it: 500
//        layers take ~1.9 KiB. The kernel resolves every path when it mounts and keeps the
//        directories themselves, so the links are removed right after.
//   Paths holding `,`, `:` or `\` (which the option parser would split on) always go through
//   links.
// - A read-only overlay (no upper) needs two lowers: with one, an empty directory
//   (/run/stratum/empty-lower, kept for ever: overlayfs stops listing directories whose lower
//   was removed) goes under it. A bind mount would show the layer's whiteouts as 0/0 devices.

import { execFile } from 'node:child_process';
import { constants } from 'node:fs';
import {
  access,
  lstat,
  mkdir,
  mkdtemp,
  readdir,
  readFile,
  realpath,
  rm,
  stat,
  symlink,
} from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, isAbsolute, join, relative, resolve, sep } from 'node:path';
import { abortError, StratumError } from '../errors/errors.js';

/** The most lower layers overlayfs stacks (OVL_MAX_STACK). */
export const MAX_OVERLAY_LOWERS = 500;
/** The longest option string mount(2) passes on (one page, less its terminating NUL). */
export const MAX_MOUNT_OPTIONS = 4095;

export interface OverlayMountOptions {
  /** The lower layers, TOP FIRST (overlayfs order). */
  readonly lowers: readonly string[];
  /** Upper and work directory (both or neither, same file system); without them the mount is read-only. */
  readonly upper?: string;
  readonly work?: string;
  /** An existing directory to mount on. */
  readonly target: string;
  readonly signal?: AbortSignal;
}

/** How mountOverlay spelled the options (for tests and diagnostics). */
export interface OverlayMountPlan {
  readonly form: 'absolute' | 'relative' | 'links';
  /** The working directory `mount` runs in ('' for the absolute form). */
  readonly cwd: string;
  readonly options: string;
  /** The links form: the symlinks to make in `cwd` (name -> absolute path). */
  readonly links?: readonly (readonly [name: string, path: string])[];
}

const AWKWARD = /[,:\\]/;

function run(
  cmd: string,
  args: readonly string[],
  cwd?: string,
): Promise<{ stdout: string; stderr: string }> {
  return new Promise((resolvePromise, reject) => {
    execFile(cmd, args, { cwd, maxBuffer: 1 << 20 }, (err, stdout, stderr) => {
      if (err) reject(Object.assign(err, { stderr: String(stderr) }));
      else resolvePromise({ stdout: String(stdout), stderr: String(stderr) });
    });
  });
}

function missingProgram(cmd: string, e: unknown): StratumError | undefined {
  if ((e as NodeJS.ErrnoException).code !== 'ENOENT') return undefined;
  return new StratumError(
    'ERR_UNSUPPORTED',
    `cannot run ${cmd}: it is not installed (it comes with util-linux: apt-get install mount)`,
    { cause: e },
  );
}

async function requireDir(path: string, what: string): Promise<void> {
  let st: import('node:fs').Stats;
  try {
    st = await stat(path);
  } catch (e) {
    throw new StratumError(
      'ERR_INVALID_ARGUMENT',
      `cannot mount an overlay: the ${what} ${path} does not exist`,
      {
        cause: e,
      },
    );
  }
  if (!st.isDirectory()) {
    throw new StratumError(
      'ERR_INVALID_ARGUMENT',
      `cannot mount an overlay: the ${what} ${path} is not a directory`,
    );
  }
}

/** The deepest directory that contains every path. */
function commonParent(paths: readonly string[]): string {
  let parts = dirname(paths[0] ?? '/').split(sep);
  for (const p of paths.slice(1)) {
    const q = dirname(p).split(sep);
    let i = 0;
    while (i < parts.length && i < q.length && parts[i] === q[i]) i++;
    parts = parts.slice(0, i);
  }
  return parts.join(sep) || sep;
}

function optionString(
  lowers: readonly string[],
  upper: string | undefined,
  work: string | undefined,
): string {
  let s = `lowerdir=${lowers.join(':')}`;
  if (upper !== undefined && work !== undefined) s += `,upperdir=${upper},workdir=${work}`;
  return s;
}

/**
 * Choose how to spell the options (see the file comment). Pure: `linkDir` is where the links
 * would be made. Throws ERR_INVALID_ARGUMENT when nothing fits.
 */
export function planOverlayOptions(
  lowers: readonly string[],
  upper: string | undefined,
  work: string | undefined,
  linkDir = '<links>',
): OverlayMountPlan {
  const all = [...lowers, ...(upper !== undefined ? [upper] : []), ...(work !== undefined ? [work] : [])];
  const awkward = all.some((p) => AWKWARD.test(p));
  if (!awkward) {
    const abs = optionString(lowers, upper, work);
    if (abs.length <= MAX_MOUNT_OPTIONS) return { form: 'absolute', cwd: '', options: abs };
    const parent = commonParent(lowers);
    const rel = lowers.map((l) => relative(parent, l) || '.');
    const options = optionString(rel, upper, work);
    if (options.length <= MAX_MOUNT_OPTIONS) return { form: 'relative', cwd: parent, options };
  }
  const links: [string, string][] = lowers.map((l, i) => [String(i), l]);
  const linkUpper = upper !== undefined && AWKWARD.test(upper);
  const linkWork = work !== undefined && AWKWARD.test(work);
  if (linkUpper) links.push(['u', upper]);
  if (linkWork) links.push(['w', work]);
  const options = optionString(
    lowers.map((_, i) => String(i)),
    linkUpper ? 'u' : upper,
    linkWork ? 'w' : work,
  );
  if (options.length > MAX_MOUNT_OPTIONS) {
    throw new StratumError(
      'ERR_INVALID_ARGUMENT',
      `cannot mount an overlay of ${lowers.length} layers: its options take ${options.length} bytes even with short names, more than the kernel's ${MAX_MOUNT_OPTIONS} (are the upper and work paths very long?)`,
    );
  }
  return { form: 'links', cwd: linkDir, options, links };
}

let emptyLower: Promise<string> | undefined;

/** An empty directory that stays (see the file comment), made once. */
function emptyLowerDir(): Promise<string> {
  emptyLower ??= (async () => {
    const base =
      process.geteuid?.() === 0 &&
      (await access('/run', constants.W_OK).then(
        () => true,
        () => false,
      ))
        ? '/run/stratum'
        : join(tmpdir(), `stratum-${process.geteuid?.() ?? 'user'}`);
    const dir = join(base, 'empty-lower');
    await mkdir(dir, { recursive: true, mode: 0o755 });
    const st = await lstat(dir);
    const uid = process.geteuid?.();
    if (!st.isDirectory() || (uid !== undefined && st.uid !== uid) || (await readdir(dir)).length > 0) {
      throw new StratumError(
        'ERR_IO',
        `${dir} should be an empty directory of ours (the empty lower layer of one-layer read-only overlays); remove it`,
      );
    }
    return dir;
  })();
  emptyLower.catch(() => {
    emptyLower = undefined;
  });
  return emptyLower;
}

/**
 * mount -t overlay; `lowers` TOP FIRST; without upper/work the mount is read-only. Paths may be
 * relative (to process.cwd()). Refuses more than 500 lowers, and options that do not fit a
 * page even in the short form, with ERR_INVALID_ARGUMENT; a failed mount is ERR_IO with
 * mount's own words.
 */
export async function mountOverlay(opts: OverlayMountOptions): Promise<OverlayMountPlan> {
  opts.signal?.throwIfAborted();
  const n = opts.lowers.length;
  if (n === 0)
    throw new StratumError('ERR_INVALID_ARGUMENT', 'cannot mount an overlay without a lower layer');
  if (n > MAX_OVERLAY_LOWERS) {
    throw new StratumError(
      'ERR_INVALID_ARGUMENT',
      `cannot mount an overlay of ${n} layers: overlayfs stacks at most ${MAX_OVERLAY_LOWERS} lower layers (flatten the image, or squash some of its layers)`,
    );
  }
  if ((opts.upper === undefined) !== (opts.work === undefined)) {
    throw new StratumError(
      'ERR_INVALID_ARGUMENT',
      'cannot mount an overlay: give both an upper and a work directory, or neither (read-only)',
    );
  }
  const lowers = opts.lowers.map((l) => resolve(l));
  const upper = opts.upper === undefined ? undefined : resolve(opts.upper);
  const work = opts.work === undefined ? undefined : resolve(opts.work);
  const target = resolve(opts.target);
  for (const [i, l] of lowers.entries()) await requireDir(l, `lower layer ${i + 1} of ${n}`);
  if (upper !== undefined) await requireDir(upper, 'upper directory');
  if (work !== undefined) await requireDir(work, 'work directory');
  await requireDir(target, 'mount point');
  if (upper === undefined && lowers.length === 1) lowers.push(await emptyLowerDir());

  let plan = planOverlayOptions(lowers, upper, work);
  let linkDir: string | undefined;
  try {
    if (plan.form === 'links') {
      linkDir = await mkdtemp(join(tmpdir(), 'stratum-ovl-'));
      plan = { ...plan, cwd: linkDir };
      for (const [name, path] of plan.links ?? []) await symlink(path, join(linkDir, name));
    }
    opts.signal?.throwIfAborted();
    try {
      await run('mount', ['-t', 'overlay', 'overlay', '-o', plan.options, target], plan.cwd || undefined);
    } catch (e) {
      throw (
        missingProgram('mount', e) ??
        new StratumError(
          'ERR_IO',
          `mounting an overlay of ${n} layer(s) on ${target} failed: ${String((e as { stderr?: string }).stderr ?? '').trim() || (e as Error).message}`,
          { cause: e },
        )
      );
    }
  } finally {
    if (linkDir !== undefined) await rm(linkDir, { recursive: true, force: true });
  }
  if (opts.signal?.aborted) {
    await unmount(target, { lazy: true }).catch(() => {});
    throw abortError(opts.signal);
  }
  return plan;
}

async function canonical(path: string): Promise<string> {
  const abs = resolve(path);
  try {
    return await realpath(abs);
  } catch {
    return abs;
  }
}

/** Unmount `target` (one mount: the topmost); nothing happens if it is not a mount point. */
export async function unmount(target: string, opts: { lazy?: boolean } = {}): Promise<void> {
  const abs = await canonical(target);
  if (!(await isMountPoint(abs))) return;
  try {
    await run('umount', [...(opts.lazy ? ['-l'] : []), abs]);
  } catch (e) {
    if (!(await isMountPoint(abs))) return;
    throw (
      missingProgram('umount', e) ??
      new StratumError(
        'ERR_IO',
        `unmounting ${abs} failed: ${String((e as { stderr?: string }).stderr ?? '').trim() || (e as Error).message}${
          opts.lazy ? '' : ' (a lazy unmount detaches it even while it is busy)'
        }`,
        { cause: e },
      )
    );
  }
}

/** Whether `path` (absolute, canonical) is a mount point. */
export async function isMountPoint(path: string): Promise<boolean> {
  return (await readMountPoints()).includes(path);
}

/** Undo mountinfo's octal escapes (`\040` space, `\011` tab, `\012` newline, `\134` backslash). */
export function decodeMountField(field: Buffer): string {
  const out: number[] = [];
  for (let i = 0; i < field.length; i++) {
    const c = field[i] as number;
    if (
      c === 0x5c &&
      i + 3 < field.length &&
      /^[0-7]{3}$/.test(field.subarray(i + 1, i + 4).toString('latin1'))
    ) {
      out.push(Number.parseInt(field.subarray(i + 1, i + 4).toString('latin1'), 8) & 0xff);
      i += 3;
    } else {
      out.push(c);
    }
  }
  return Buffer.from(out).toString('utf8');
}

/** Mount points (field 5) of a mountinfo text, in its order. */
export function parseMountInfo(text: Buffer): string[] {
  const out: string[] = [];
  let start = 0;
  while (start < text.length) {
    let end = text.indexOf(0x0a, start);
    if (end < 0) end = text.length;
    const line = text.subarray(start, end);
    start = end + 1;
    // id parent major:minor root mountpoint ...
    let field = 0;
    let from = 0;
    for (let i = 0; i <= line.length; i++) {
      if (i === line.length || line[i] === 0x20) {
        if (field === 4) {
          out.push(decodeMountField(line.subarray(from, i)));
          break;
        }
        field++;
        from = i + 1;
      }
    }
  }
  return out;
}

async function readMountPoints(): Promise<string[]> {
  return parseMountInfo(await readFile('/proc/self/mountinfo'));
}

/**
 * The mount points at or below `prefix`, in the order to unmount them (latest first, so a
 * mount stacked over another, or over a parent, comes before it).
 */
export async function mountsUnder(prefix: string): Promise<string[]> {
  const p = await canonical(prefix);
  if (!isAbsolute(p)) return [];
  const under = p === sep ? sep : `${p}${sep}`;
  return (await readMountPoints()).filter((m) => m === p || m.startsWith(under) || p === sep).reverse();
}
