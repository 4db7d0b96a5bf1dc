// The Dockerfile executor: stages, instructions, layers, cache, and the image it writes.
//
// A stage's state is its image config (being edited), its layers (descriptor + diffID, whose
// snapshots the snapshot area holds) and its history. Metadata instructions (ENV, LABEL,
// USER, CMD, ...) only edit the config and add an `empty_layer` history entry. A step that
// changes files (RUN, COPY, ADD, WORKDIR) mounts an overlay of the stage's snapshots (top
// first) with a fresh upper directory, runs (runtime/process.ts runProcess) or writes
// (write-root.ts) in the merged view, unmounts, and turns the upper directory into a layer
// (layer/diff.ts diffOverlayUpper); the upper directory is then adopted as the snapshot of
// that layer, so the next step stacks on it without extracting anything. A step whose upper
// directory holds no change makes no layer (docker skips empty layers too).
//
// Cache (cache.ts): every step has a key chained from the previous one; a hit reuses the
// step's layer and history entry without mounting or running anything. Stages are built
// only when the target needs them (FROM a stage, COPY --from), in file order.
//
// Reproducible builds: with `timestamp` (or SOURCE_DATE_EPOCH), every created time in the
// config and history is that time and layer mtimes are clamped to it; the timestamp is part of
// the cache key. Without it, a step's history keeps the time it was first built, so a fully
// cached rebuild writes the very same image.
//
// Failure: nothing is tagged until the image is written; every mount and work directory is
// removed (work directories of killed builds are removed by the next build, by pid).

import { randomBytes } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { lstat, mkdir, open, readFile, rm } from 'node:fs/promises';
import { join, posix } from 'node:path';
import { Readable, Writable } from 'node:stream';
import { resolveUserInRootfs } from '../bundle/user.js';
import type { Target } from '../content/types.js';
import { type Digest, isDigest } from '../digest/digest.js';
import { abortError, fromSystemError, isStratumError, StratumError } from '../errors/errors.js';
import { Image, Index } from '../image/image.js';
import { formatPlatform, hostPlatform } from '../image/platform.js';
import { writeImage } from '../image/write.js';
import { applyLayer } from '../layer/apply.js';
import { diffOverlayUpper } from '../layer/diff.js';
import type { Store } from '../layout/store.js';
import { formatReference, parseNormalizedReference, withDefaultTag } from '../reference/reference.js';
import { reapProcesses, runProcess } from '../runtime/process.js';
import { mountOverlay, unmount } from '../snapshot/overlay.js';
import { type SnapshotLayer, Snapshots } from '../snapshot/snapshots.js';
import { isIndexMediaType, MediaType } from '../spec/media-types.js';
import type {
  ContainerConfig,
  Descriptor,
  HealthConfig,
  HistoryEntry,
  ImageConfig,
  Platform,
} from '../spec/types.js';
import {
  BUILD_CACHE_DIR,
  BUILD_WORK_DIR,
  BuildCache,
  type CacheEntry,
  cacheKey,
  cleanDeadWork,
  unmountAll,
} from './cache.js';
import { type Dockerfile, type Instruction, parseDockerfile } from './dockerfile.js';
import { parseDockerignore } from './dockerignore.js';
import { type LexEnv, LexError, processHeredoc, processWord, processWords } from './shell-lex.js';
import { type ResolvedSource, SourceTree } from './sources.js';
import { MOUNT_STUBS, missingStubs, removeStubs } from './upper.js';
import { type Owner, RootWriter } from './write-root.js';

export interface BuildOptions {
  /** The local store: base images are read from it, the image is written to it. */
  readonly store: Store;
  /** The build context directory. */
  readonly context: string;
  /** The Dockerfile's path (default CONTEXT/Dockerfile), or its text with `dockerfileText`. */
  readonly dockerfile?: string;
  readonly dockerfileText?: string;
  /** Store ref names (full normalised references) to tag the image with. */
  readonly tags?: readonly string[];
  readonly buildArgs?: Readonly<Record<string, string>>;
  /** Build this stage (name or index) instead of the last. */
  readonly target?: string;
  readonly noCache?: boolean;
  /** Created times and the mtime clamp (seconds since the epoch or a Date); default SOURCE_DATE_EPOCH. */
  readonly timestamp?: number | Date;
  /** RUN's network: 'host' (default, like docker's networked builds) or 'none'. */
  readonly network?: 'none' | 'host';
  /** The platform of base images picked from an index, and of `FROM scratch` (default: this machine's). */
  readonly platform?: Platform;
  /** Bring a base image that is not in the store into it under `ref` (its full normalised name), e.g. by pulling it. */
  readonly pull?: (ref: string, signal?: AbortSignal) => Promise<void>;
  /** Where RUN output goes (default: nowhere; the tail is kept for errors). */
  readonly output?: Writable;
  readonly onEvent?: (e: BuildEvent) => void;
  readonly signal?: AbortSignal;
  /** OCI runtime binary and state root for RUN (runtime/process.ts defaults). */
  readonly runtime?: string;
  readonly runtimeRoot?: string;
  /** Environment for SOURCE_DATE_EPOCH (default process.env). */
  readonly env?: NodeJS.ProcessEnv;
}

export type BuildEvent =
  | {
      readonly type: 'step';
      readonly step: number;
      readonly count: number;
      readonly stage: string;
      readonly text: string;
    }
  | { readonly type: 'cache-hit'; readonly step: number }
  | {
      readonly type: 'layer';
      readonly step: number;
      readonly digest: Digest;
      readonly size: number;
      readonly diffId: Digest;
    }
  | { readonly type: 'empty-layer'; readonly step: number }
  | { readonly type: 'pull'; readonly ref: string }
  | { readonly type: 'warning'; readonly message: string }
  | { readonly type: 'tagged'; readonly ref: string };

export interface BuildResult {
  readonly manifest: Descriptor;
  readonly config: Descriptor;
  /** The image id, as docker names it: the config digest. */
  readonly imageId: Digest;
  readonly tags: readonly string[];
  /** Steps run or taken from the cache (FROM lines excluded). */
  readonly steps: number;
  /** Steps taken from the cache. */
  readonly cacheHits: number;
  /** Layers of the image (its base image's included). */
  readonly layers: number;
  /** Layers made by this build (not from the cache). */
  readonly builtLayers: number;
}

/** A RUN that exited with a non-zero status: its exit code and the tail of its output. */
export class BuildStepError extends StratumError {
  readonly exitCode: number;
  readonly output: string;
  constructor(message: string, exitCode: number, output: string) {
    super('ERR_BUILD_STEP_FAILED', message);
    this.name = 'BuildStepError';
    this.exitCode = exitCode;
    this.output = output;
  }
}

const DEFAULT_SHELL = ['/bin/sh', '-c'];
const DEFAULT_PATH = 'PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';
/** Build args docker lets RUN see without an ARG, and keeps out of history and the cache. */
const PROXY_ARGS = [
  'HTTP_PROXY',
  'http_proxy',
  'HTTPS_PROXY',
  'https_proxy',
  'FTP_PROXY',
  'ftp_proxy',
  'NO_PROXY',
  'no_proxy',
  'ALL_PROXY',
  'all_proxy',
];
const OUTPUT_TAIL = 8 * 1024;

type MutableConfig = { -readonly [K in keyof ContainerConfig]: ContainerConfig[K] };

interface Stage {
  readonly index: number;
  readonly name: string | undefined;
  readonly from: Instruction;
  readonly instructions: readonly Instruction[];
}

interface State {
  readonly platform: Platform;
  config: MutableConfig;
  author: string | undefined;
  layers: SnapshotLayer[];
  history: HistoryEntry[];
  key: Digest;
  /** Build args declared in the stage (undefined: declared without a value). */
  readonly args: Map<string, string | undefined>;
  shell: string[];
  cmdSet: boolean;
}

interface BaseImage {
  readonly descriptor: Descriptor;
  readonly config: ImageConfig;
  readonly layers: SnapshotLayer[];
}

function fail(
  where: string,
  why: string,
  code:
    | 'ERR_BUILD_SYNTAX'
    | 'ERR_NOT_FOUND'
    | 'ERR_UNSUPPORTED'
    | 'ERR_INVALID_ARGUMENT' = 'ERR_BUILD_SYNTAX',
): StratumError {
  return new StratumError(code, `${where}: ${why}`);
}

function epochOf(t: number | Date | undefined, env: NodeJS.ProcessEnv): number | undefined {
  if (t instanceof Date) return Math.floor(t.getTime() / 1000);
  if (typeof t === 'number') return Math.floor(t);
  const s = env.SOURCE_DATE_EPOCH;
  if (s !== undefined && /^\d+$/.test(s)) return Number(s);
  return undefined;
}

function envGet(env: readonly string[] | undefined, name: string): string | undefined {
  for (const e of env ?? []) {
    const eq = e.indexOf('=');
    if ((eq === -1 ? e : e.slice(0, eq)) === name) return eq === -1 ? '' : e.slice(eq + 1);
  }
  return undefined;
}

function envSet(env: readonly string[] | undefined, name: string, value: string): string[] {
  const out = [...(env ?? [])];
  const i = out.findIndex((e) => e === name || e.startsWith(`${name}=`));
  if (i === -1) out.push(`${name}=${value}`);
  else out[i] = `${name}=${value}`;
  return out;
}

/** Go durations as HEALTHCHECK takes them (`30s`, `1m30s`, `500ms`) -> nanoseconds. */
export function parseDuration(s: string): number | undefined {
  if (!/^(\d+(\.\d+)?(ns|us|µs|ms|s|m|h))+$/.test(s)) return undefined;
  const unit: Record<string, number> = { ns: 1, us: 1e3, µs: 1e3, ms: 1e6, s: 1e9, m: 60e9, h: 3600e9 };
  let total = 0;
  for (const m of s.matchAll(/(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)/g)) {
    total += Number(m[1]) * (unit[m[2] as string] as number);
  }
  return Math.round(total);
}

/** Split `KEY=VALUE` pairs (ENV, LABEL, ARG) with docker's quoting; the old `ENV KEY value` form too. */
function parsePairs(ins: Instruction, env: LexEnv, esc: string, allowOld: boolean): [string, string][] {
  const args = ins.args;
  const firstWord = /^\S+/.exec(args)?.[0] ?? '';
  const expand = (w: string) => {
    try {
      return processWord(w, env, esc);
    } catch (e) {
      if (e instanceof LexError) throw fail(ins.where, e.message);
      throw e;
    }
  };
  if (!firstWord.includes('=')) {
    if (!allowOld) throw fail(ins.where, `${ins.keyword} takes NAME=VALUE pairs`);
    const rest = args.slice(firstWord.length).trim();
    if (rest === '')
      throw fail(ins.where, `${ins.keyword} ${firstWord} needs a value (${ins.keyword} NAME=VALUE)`);
    return [[expand(firstWord), expand(rest)]];
  }
  // split on unquoted whitespace, keeping quotes for the expansion to remove
  const words: string[] = [];
  let cur = '';
  let quote: string | undefined;
  for (let i = 0; i < args.length; i++) {
    const ch = args[i] as string;
    if (quote) {
      cur += ch;
      if (ch === esc && quote === '"' && i + 1 < args.length) cur += args[++i];
      else if (ch === quote) quote = undefined;
    } else if (ch === '"' || ch === "'") {
      quote = ch;
      cur += ch;
    } else if (ch === esc && i + 1 < args.length) {
      cur += ch + args[++i];
    } else if (/\s/.test(ch)) {
      if (cur !== '') words.push(cur);
      cur = '';
    } else cur += ch;
  }
  if (quote) throw fail(ins.where, `unmatched ${quote} quote`);
  if (cur !== '') words.push(cur);
  return words.map((w) => {
    const eq = w.indexOf('=');
    if (eq <= 0) throw fail(ins.where, `${ins.keyword}: ${JSON.stringify(w)} is not NAME=VALUE`);
    return [expand(w.slice(0, eq)), expand(w.slice(eq + 1))];
  });
}

/** Docker's shell-form command words for CMD/ENTRYPOINT/RUN. */
function commandOf(ins: Instruction, shell: readonly string[]): string[] {
  return ins.json ? [...ins.json] : [...shell, ins.args];
}

class Builder {
  readonly #o: BuildOptions;
  readonly #df: Dockerfile;
  readonly #target: Target;
  readonly #snapshots: Snapshots;
  readonly #cache: BuildCache;
  readonly #context: SourceTree;
  readonly #epoch: number | undefined;
  readonly #platform: Platform;
  readonly #workRoot: string;
  readonly #meta = new Map<string, string | undefined>();
  readonly #usedArgs = new Set<string>();
  readonly #states = new Map<number, State>();
  readonly #stages: Stage[];
  #step = 0;
  #count = 0;
  cacheHits = 0;
  steps = 0;
  builtLayers = 0;

  constructor(
    o: BuildOptions,
    df: Dockerfile,
    target: Target,
    snapshots: Snapshots,
    context: SourceTree,
    workRoot: string,
  ) {
    this.#o = o;
    this.#df = df;
    this.#target = target;
    this.#snapshots = snapshots;
    this.#cache = new BuildCache(o.store.root);
    this.#context = context;
    this.#epoch = epochOf(o.timestamp, o.env ?? process.env);
    this.#platform = o.platform ?? hostPlatform();
    this.#workRoot = workRoot;
    this.#stages = [];
    let cur:
      | { index: number; name: string | undefined; from: Instruction; instructions: Instruction[] }
      | undefined;
    for (const ins of df.instructions) {
      if (ins.keyword === 'FROM') {
        if (cur) this.#stages.push(cur);
        const words = ins.args.split(/\s+/);
        let name: string | undefined;
        if (words.length === 3 && words[1]?.toUpperCase() === 'AS') name = (words[2] as string).toLowerCase();
        else if (words.length !== 1) throw fail(ins.where, 'FROM takes IMAGE [AS NAME]');
        if (name !== undefined && !/^[a-z][a-z0-9._-]*$/.test(name)) {
          throw fail(
            ins.where,
            `invalid stage name ${JSON.stringify(name)}: use letters, digits, '.', '_', '-'`,
          );
        }
        if (name !== undefined && this.#stages.some((s) => s.name === name)) {
          throw fail(ins.where, `duplicate stage name ${JSON.stringify(name)}`);
        }
        cur = { index: this.#stages.length, name, from: ins, instructions: [] };
      } else if (cur) cur.instructions.push(ins);
      else if (ins.keyword !== 'ARG') throw fail(ins.where, `${ins.keyword} before FROM`);
    }
    if (cur) this.#stages.push(cur);
    this.#initMeta();
  }

  #event(e: BuildEvent): void {
    this.#o.onEvent?.(e);
  }

  #buildArg(name: string): string | undefined {
    const v = this.#o.buildArgs?.[name];
    if (v !== undefined) this.#usedArgs.add(name);
    return v;
  }

  #expand(ins: Instruction, word: string, env: LexEnv): string {
    try {
      return processWord(word, env, this.#df.escape);
    } catch (e) {
      if (e instanceof LexError) throw fail(ins.where, e.message);
      throw e;
    }
  }

  #expandWords(ins: Instruction, word: string, env: LexEnv): string[] {
    try {
      return processWords(word, env, this.#df.escape);
    } catch (e) {
      if (e instanceof LexError) throw fail(ins.where, e.message);
      throw e;
    }
  }

  #initMeta(): void {
    const p = this.#platform;
    const plat = formatPlatform(p);
    const auto: Record<string, string> = {
      TARGETPLATFORM: plat,
      TARGETOS: p.os,
      TARGETARCH: p.architecture,
      TARGETVARIANT: p.variant ?? '',
      BUILDPLATFORM: formatPlatform(hostPlatform()),
      BUILDOS: hostPlatform().os,
      BUILDARCH: hostPlatform().architecture,
      BUILDVARIANT: hostPlatform().variant ?? '',
    };
    for (const [k, v] of Object.entries(auto)) this.#meta.set(k, v);
    for (const ins of this.#df.instructions) {
      if (ins.keyword === 'FROM') break;
      for (const [name, def] of this.#argDecls(ins, this.#metaEnv())) {
        this.#meta.set(name, this.#buildArg(name) ?? def);
      }
    }
  }

  #metaEnv(): Map<string, string> {
    const m = new Map<string, string>();
    for (const [k, v] of this.#meta) if (v !== undefined) m.set(k, v);
    return m;
  }

  /** ARG NAME[=default] ... -> [name, expanded default | undefined]. */
  #argDecls(ins: Instruction, env: LexEnv): [string, string | undefined][] {
    const out: [string, string | undefined][] = [];
    for (const w of ins.args.split(/\s+/)) {
      const eq = w.indexOf('=');
      const name = eq === -1 ? w : w.slice(0, eq);
      if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(name))
        throw fail(ins.where, `invalid build arg name ${JSON.stringify(name)}`);
      out.push([name, eq === -1 ? undefined : this.#expand(ins, w.slice(eq + 1), env)]);
    }
    return out;
  }

  /** The stage a name or index refers to, if it is an earlier stage. */
  #stageNamed(name: string, before: number): Stage | undefined {
    const lower = name.toLowerCase();
    const byName = this.#stages.find((s) => s.index < before && s.name === lower);
    if (byName) return byName;
    if (/^\d+$/.test(name)) {
      const i = Number(name);
      if (i < before) return this.#stages[i];
    }
    return undefined;
  }

  /** Stages the target needs, in file order. */
  #needed(target: Stage): Stage[] {
    const need = new Set<number>();
    const visit = (s: Stage): void => {
      if (need.has(s.index)) return;
      need.add(s.index);
      const meta = this.#metaEnv();
      let from: string;
      try {
        from = processWord(s.from.args.split(/\s+/)[0] ?? '', meta, this.#df.escape);
      } catch {
        from = '';
      }
      const dep = this.#stageNamed(from, s.index);
      if (dep) visit(dep);
      for (const ins of s.instructions) {
        const f = ins.keyword === 'COPY' ? ins.flags.get('from') : undefined;
        if (typeof f !== 'string') continue;
        let name = f;
        try {
          name = processWord(f, meta, this.#df.escape);
        } catch {}
        const d = this.#stageNamed(name, s.index);
        if (d) visit(d);
      }
    };
    visit(target);
    return this.#stages.filter((s) => need.has(s.index));
  }

  async run(): Promise<BuildResult> {
    let target = this.#stages[this.#stages.length - 1] as Stage;
    if (this.#o.target !== undefined) {
      const t = this.#stageNamed(this.#o.target, this.#stages.length);
      if (!t) {
        const names = this.#stages.map((s) => s.name ?? String(s.index)).join(', ');
        throw new StratumError(
          'ERR_NOT_FOUND',
          `target stage ${JSON.stringify(this.#o.target)} is not in ${this.#df.file} (its stages: ${names})`,
        );
      }
      target = t;
    }
    const stages = this.#needed(target);
    this.#count = stages.reduce((n, s) => n + 1 + s.instructions.length, 0);
    for (const s of stages) if (!this.#states.has(s.index)) await this.#buildStage(s);
    const unused = Object.keys(this.#o.buildArgs ?? {}).filter(
      (k) => !this.#usedArgs.has(k) && !PROXY_ARGS.includes(k),
    );
    if (unused.length > 0) {
      this.#event({ type: 'warning', message: `build args not consumed by any ARG: ${unused.join(', ')}` });
    }
    const state = this.#states.get(target.index) as State;
    return this.#write(state);
  }

  #created(entry?: CacheEntry): string {
    if (this.#epoch !== undefined) return new Date(this.#epoch * 1000).toISOString();
    return entry?.history.created ?? new Date().toISOString();
  }

  #stepEvent(stage: Stage, text: string): number {
    const step = ++this.#step;
    this.#event({
      type: 'step',
      step,
      count: this.#count,
      stage: stage.name ?? String(stage.index),
      text,
    });
    return step;
  }

  // ---- FROM -------------------------------------------------------------------------------

  async #resolveImage(ref: string, where: string): Promise<BaseImage> {
    const signal = this.#o.signal;
    let r: ReturnType<typeof parseNormalizedReference>;
    try {
      r = parseNormalizedReference(ref);
    } catch (e) {
      throw fail(where, `invalid image reference ${JSON.stringify(ref)}: ${(e as Error).message}`);
    }
    if (r.digest === undefined) r = withDefaultTag(r);
    const name = formatReference(r);
    let desc: Descriptor;
    try {
      desc = await this.#target.resolve(name, signal ? { signal } : {});
    } catch (e) {
      if (!(e instanceof StratumError && e.code === 'ERR_NOT_FOUND')) throw e;
      if (!this.#o.pull) {
        throw fail(where, `base image ${ref} is not in the store (stratum pull ${ref})`, 'ERR_NOT_FOUND');
      }
      this.#event({ type: 'pull', ref: name });
      await this.#o.pull(name, signal);
      desc = await this.#target.resolve(name, signal ? { signal } : {});
    }
    const image = isIndexMediaType(desc.mediaType)
      ? await new Index(this.#target, desc).image(this.#platform)
      : new Image(this.#target, desc);
    const config = await image.config();
    const layers = await image.layers();
    const diffIds = config.rootfs.diff_ids;
    if (diffIds.length !== layers.length) {
      throw new StratumError(
        'ERR_INVALID_DOCUMENT',
        `${where}: image ${ref} has ${layers.length} layers but ${diffIds.length} diff_ids in its config`,
      );
    }
    return {
      descriptor: image.descriptor,
      config,
      layers: layers.map((descriptor, i) => ({ descriptor, diffId: diffIds[i] as Digest })),
    };
  }

  /** A stage's final state, building it first if no one needed it yet (a --from named through a stage ARG). */
  async #built(stage: Stage): Promise<State> {
    const have = this.#states.get(stage.index);
    if (have) return have;
    this.#count += 1 + stage.instructions.length;
    await this.#buildStage(stage);
    return this.#states.get(stage.index) as State;
  }

  async #buildStage(stage: Stage): Promise<void> {
    const ins = stage.from;
    const meta = this.#metaEnv();
    const flagPlatform = ins.flags.get('platform');
    if (flagPlatform !== undefined && flagPlatform !== true) {
      const p = this.#expand(ins, flagPlatform, meta);
      if (
        p !== formatPlatform(this.#platform) &&
        p !== `${this.#platform.os}/${this.#platform.architecture}`
      ) {
        throw fail(
          ins.where,
          `FROM --platform=${p}: building for another platform is not supported (this build is ${formatPlatform(this.#platform)})`,
          'ERR_UNSUPPORTED',
        );
      }
    }
    const imageWord = this.#expand(ins, ins.args.split(/\s+/)[0] ?? '', meta);
    this.#stepEvent(stage, `FROM ${imageWord}${stage.name ? ` AS ${stage.name}` : ''}`);
    let state: State;
    const dep = this.#stageNamed(imageWord, stage.index);
    const base = {
      platform: this.#platform,
      args: new Map<string, string | undefined>(),
      shell: DEFAULT_SHELL,
      cmdSet: false,
    };
    if (dep) {
      const d = await this.#built(dep);
      state = {
        ...base,
        platform: d.platform,
        config: structuredClone(d.config),
        author: d.author,
        layers: [...d.layers],
        history: [...d.history],
        key: cacheKey(d.key, { from: 'stage', epoch: this.#epoch ?? null }),
        shell: [...(d.config.Shell ?? DEFAULT_SHELL)],
      };
    } else if (imageWord.toLowerCase() === 'scratch') {
      state = {
        ...base,
        config: { Env: [DEFAULT_PATH] },
        author: undefined,
        layers: [],
        history: [],
        key: cacheKey(undefined, {
          from: 'scratch',
          platform: formatPlatform(this.#platform),
          epoch: this.#epoch ?? null,
        }),
      };
    } else {
      const img = await this.#resolveImage(imageWord, ins.where);
      const c = img.config;
      state = {
        ...base,
        platform: {
          architecture: c.architecture,
          os: c.os,
          ...(c.variant ? { variant: c.variant } : {}),
        },
        config: structuredClone({ ...(c.config ?? {}) }) as MutableConfig,
        author: undefined,
        layers: img.layers,
        history: [...(c.history ?? [])],
        key: cacheKey(undefined, { from: img.descriptor.digest, epoch: this.#epoch ?? null }),
        shell: [...(c.config?.Shell ?? DEFAULT_SHELL)],
      };
    }
    const triggers = state.config.OnBuild ?? [];
    delete state.config.OnBuild;
    this.#states.set(stage.index, state);
    if (triggers.length > 0) {
      this.#count += triggers.length;
      const parsed = parseDockerfile(
        `FROM scratch\n${triggers.join('\n')}\n`,
        `${ins.where} (ONBUILD of ${imageWord})`,
      );
      for (const t of parsed.instructions.slice(1)) await this.#instruction(stage, state, t);
    }
    for (const i of stage.instructions) await this.#instruction(stage, state, i);
  }

  // ---- instructions -----------------------------------------------------------------------

  /** Variables for substitution: the stage's build args, overridden by its ENV. */
  #env(state: State): Map<string, string> {
    const m = new Map<string, string>();
    for (const [k, v] of state.args) if (v !== undefined) m.set(k, v);
    for (const e of state.config.Env ?? []) {
      const eq = e.indexOf('=');
      if (eq > 0) m.set(e.slice(0, eq), e.slice(eq + 1));
    }
    return m;
  }

  async #instruction(stage: Stage, state: State, ins: Instruction): Promise<void> {
    if (this.#o.signal?.aborted) throw abortError(this.#o.signal);
    const env = this.#env(state);
    const c = state.config;
    switch (ins.keyword) {
      case 'ARG': {
        const decls = this.#argDecls(ins, env);
        for (const [name, def] of decls) {
          const value = this.#buildArg(name) ?? def ?? this.#meta.get(name);
          state.args.set(name, value);
        }
        return this.#meta0(
          stage,
          state,
          ins,
          `ARG ${decls.map(([n, d]) => (d === undefined ? n : `${n}=${d}`)).join(' ')}`,
          { arg: decls.map(([n]) => n) },
        );
      }
      case 'ENV': {
        const pairs = parsePairs(ins, env, this.#df.escape, true);
        for (const [k, v] of pairs) c.Env = envSet(c.Env, k, v);
        return this.#meta0(stage, state, ins, `ENV ${pairs.map(([k, v]) => `${k}=${v}`).join(' ')}`);
      }
      case 'LABEL': {
        const pairs = parsePairs(ins, env, this.#df.escape, true);
        c.Labels = { ...(c.Labels ?? {}) };
        for (const [k, v] of pairs) (c.Labels as Record<string, string>)[k] = v;
        return this.#meta0(stage, state, ins, `LABEL ${pairs.map(([k, v]) => `${k}=${v}`).join(' ')}`);
      }
      case 'MAINTAINER':
        state.author = ins.args;
        return this.#meta0(stage, state, ins, `MAINTAINER ${ins.args}`);
      case 'USER': {
        const u = this.#expand(ins, ins.args, env);
        if (u === '') throw fail(ins.where, 'USER needs a user name or uid');
        c.User = u;
        return this.#meta0(stage, state, ins, `USER ${u}`);
      }
      case 'EXPOSE': {
        const ports: Record<string, object> = { ...(c.ExposedPorts ?? {}) };
        const words = this.#expandWords(ins, ins.args, env);
        for (const w of words) {
          const m = /^(\d+)(?:-(\d+))?(?:\/(tcp|udp|sctp))?$/i.exec(w);
          if (!m) throw fail(ins.where, `invalid port ${JSON.stringify(w)}: want PORT[-PORT][/tcp|udp|sctp]`);
          const lo = Number(m[1]);
          const hi = m[2] === undefined ? lo : Number(m[2]);
          if (lo < 1 || hi > 65535 || hi < lo) throw fail(ins.where, `invalid port range ${w}`);
          for (let p = lo; p <= hi; p++) ports[`${p}/${(m[3] ?? 'tcp').toLowerCase()}`] = {};
        }
        c.ExposedPorts = ports;
        return this.#meta0(stage, state, ins, `EXPOSE ${words.join(' ')}`);
      }
      case 'VOLUME': {
        const vols: Record<string, object> = { ...(c.Volumes ?? {}) };
        const words = ins.json
          ? ins.json.map((w) => this.#expand(ins, w, env))
          : ins.args.split(/\s+/).map((w) => this.#expand(ins, w, env));
        for (const v of words) {
          if (v.trim() === '') throw fail(ins.where, 'VOLUME: an empty path');
          vols[v] = {};
        }
        c.Volumes = vols;
        return this.#meta0(stage, state, ins, `VOLUME [${words.join(' ')}]`);
      }
      case 'CMD':
        c.Cmd = commandOf(ins, state.shell);
        state.cmdSet = true;
        return this.#meta0(stage, state, ins, `CMD ${JSON.stringify(c.Cmd)}`);
      case 'ENTRYPOINT':
        c.Entrypoint = commandOf(ins, state.shell);
        if (!state.cmdSet) delete c.Cmd;
        return this.#meta0(stage, state, ins, `ENTRYPOINT ${JSON.stringify(c.Entrypoint)}`);
      case 'SHELL':
        state.shell = [...(ins.json as readonly string[])];
        c.Shell = [...state.shell];
        return this.#meta0(stage, state, ins, `SHELL ${JSON.stringify(c.Shell)}`);
      case 'STOPSIGNAL': {
        const s = this.#expand(ins, ins.args, env);
        if (!/^(SIG[A-Z0-9+-]+|[A-Z0-9+-]+|\d+)$/.test(s))
          throw fail(ins.where, `invalid STOPSIGNAL ${JSON.stringify(s)}`);
        c.StopSignal = s;
        return this.#meta0(stage, state, ins, `STOPSIGNAL ${s}`);
      }
      case 'HEALTHCHECK':
        c.Healthcheck = this.#healthcheck(ins, state.shell);
        return this.#meta0(stage, state, ins, `HEALTHCHECK ${JSON.stringify(c.Healthcheck)}`);
      case 'ONBUILD': {
        const inner = /^\S+/.exec(ins.args)?.[0]?.toUpperCase() ?? '';
        if (inner === 'ONBUILD' || inner === 'FROM' || inner === 'MAINTAINER') {
          throw fail(ins.where, `ONBUILD ${inner} is not allowed`);
        }
        parseDockerfile(`FROM scratch\n${ins.args}\n`, ins.where);
        c.OnBuild = [...(c.OnBuild ?? []), ins.args];
        return this.#meta0(stage, state, ins, `ONBUILD ${ins.args}`);
      }
      case 'WORKDIR':
        return this.#workdir(stage, state, ins, env);
      case 'COPY':
      case 'ADD':
        return this.#copy(stage, state, ins, env);
      case 'RUN':
        return this.#run(stage, state, ins, env);
      case 'FROM':
        throw fail(ins.where, 'FROM inside a stage');
    }
  }

  #healthcheck(ins: Instruction, shell: readonly string[]): HealthConfig {
    const words = ins.args.split(/\s+/);
    const kind = (words[0] ?? '').toUpperCase();
    if (kind === 'NONE') {
      if (words.length > 1 || ins.flags.size > 0)
        throw fail(ins.where, 'HEALTHCHECK NONE takes no arguments');
      return { Test: ['NONE'] };
    }
    if (kind !== 'CMD') throw fail(ins.where, 'HEALTHCHECK takes CMD COMMAND or NONE');
    const rest = ins.args.slice(3).trim();
    if (rest === '') throw fail(ins.where, 'HEALTHCHECK CMD needs a command');
    let test: string[];
    try {
      const j: unknown = rest.startsWith('[') ? JSON.parse(rest) : undefined;
      test = Array.isArray(j) && j.every((x) => typeof x === 'string') ? ['CMD', ...j] : ['CMD-SHELL', rest];
    } catch {
      test = ['CMD-SHELL', rest];
    }
    void shell;
    const hc: { -readonly [K in keyof HealthConfig]: HealthConfig[K] } = { Test: test };
    const dur = (name: string): number | undefined => {
      const v = ins.flags.get(name);
      if (v === undefined) return undefined;
      const d = typeof v === 'string' ? parseDuration(v) : undefined;
      if (d === undefined) throw fail(ins.where, `--${name} takes a duration like 30s or 1m30s`);
      return d;
    };
    const interval = dur('interval');
    const timeout = dur('timeout');
    const startPeriod = dur('start-period');
    const startInterval = dur('start-interval');
    if (interval !== undefined) hc.Interval = interval;
    if (timeout !== undefined) hc.Timeout = timeout;
    if (startPeriod !== undefined) hc.StartPeriod = startPeriod;
    if (startInterval !== undefined) hc.StartInterval = startInterval;
    const retries = ins.flags.get('retries');
    if (retries !== undefined) {
      if (typeof retries !== 'string' || !/^\d+$/.test(retries))
        throw fail(ins.where, '--retries takes a whole number');
      hc.Retries = Number(retries);
    }
    return hc;
  }

  /** A metadata-only step: config already edited; history entry, cache key. */
  async #meta0(
    stage: Stage,
    state: State,
    ins: Instruction,
    createdBy: string,
    extra?: unknown,
  ): Promise<void> {
    const step = this.#stepEvent(stage, ins.text);
    this.steps++;
    const key = cacheKey(state.key, { createdBy, extra: extra ?? null });
    const hit = this.#o.noCache ? undefined : await this.#cache.get(key);
    if (hit) {
      this.cacheHits++;
      this.#event({ type: 'cache-hit', step });
    }
    const history: HistoryEntry = { created: this.#created(hit), created_by: createdBy, empty_layer: true };
    state.history.push(history);
    state.key = key;
    if (!hit) await this.#cache.put({ key, diffIds: state.layers.map((l) => l.diffId), history });
  }

  // ---- file-system steps -------------------------------------------------------------------

  /**
   * Run a step that may change files: from the cache, or by `apply` on a mounted overlay of
   * the stage; the upper directory becomes the step's layer.
   */
  async #fsStep(
    stage: Stage,
    state: State,
    ins: Instruction,
    createdBy: string,
    inputs: unknown,
    apply: (rootfs: string) => Promise<{ stubs?: readonly string[] } | undefined>,
  ): Promise<void> {
    const step = this.#stepEvent(stage, ins.text);
    this.steps++;
    const key = cacheKey(state.key, { createdBy, inputs });
    if (!this.#o.noCache) {
      const hit = await this.#cache.get(key);
      if (hit && (hit.layer === undefined || (await this.#target.exists(hit.layer.descriptor)))) {
        this.cacheHits++;
        this.#event({ type: 'cache-hit', step });
        if (hit.layer) state.layers.push({ descriptor: hit.layer.descriptor, diffId: hit.layer.diffId });
        state.history.push({ ...hit.history, created: this.#created(hit) });
        state.key = key;
        return;
      }
    }
    const work = join(this.#workRoot, `step-${step}`);
    const upper = join(work, 'upper');
    const ovlWork = join(work, 'work');
    const merged = join(work, 'merged');
    const empty = join(work, 'empty');
    for (const d of [upper, ovlWork, merged, empty]) await mkdir(d, { recursive: true });
    try {
      const chain = await this.#snapshots.prepare(state.layers, this.#target, this.#signalOpts());
      const lowers = chain.lowers;
      await mountOverlay({
        lowers: lowers.length > 0 ? lowers : [empty],
        upper,
        work: ovlWork,
        target: merged,
      });
      let stubs: readonly string[] = [];
      try {
        stubs = (await apply(merged))?.stubs ?? [];
      } catch (e) {
        throw located(e, ins.where);
      } finally {
        await unmount(merged).catch(() => unmount(merged, { lazy: true }));
      }
      if (stubs.length > 0) await removeStubs(upper, lowers, stubs);
      const blob = join(work, 'layer.tar.gz');
      const diff = await diffOverlayUpper(upper, {
        destination: blob,
        sourceDateEpoch: this.#epoch ?? null,
        ...this.#signalOpts(),
      });
      let history: HistoryEntry;
      if (diff.entries === 0) {
        history = { created: this.#created(), created_by: createdBy, empty_layer: true };
        this.#event({ type: 'empty-layer', step });
      } else {
        const descriptor: Descriptor = { mediaType: diff.mediaType, digest: diff.digest, size: diff.size };
        await this.#target.push(descriptor, createReadStream(blob), this.#signalOpts());
        const parent = chain.chainIds[chain.chainIds.length - 1];
        await this.#snapshots.adopt(parent, diff.diffId, upper);
        state.layers.push({ descriptor, diffId: diff.diffId });
        this.builtLayers++;
        history = { created: this.#created(), created_by: createdBy };
        this.#event({ type: 'layer', step, digest: diff.digest, size: diff.size, diffId: diff.diffId });
      }
      state.history.push(history);
      state.key = key;
      const last = state.layers[state.layers.length - 1];
      await this.#cache.put({
        key,
        ...(diff.entries === 0 || last === undefined
          ? {}
          : { layer: { descriptor: last.descriptor, diffId: last.diffId } }),
        diffIds: state.layers.map((l) => l.diffId),
        history,
      });
    } finally {
      await unmount(merged, { lazy: true }).catch(() => {});
      await rm(work, { recursive: true, force: true });
    }
  }

  #signalOpts(): { signal?: AbortSignal } {
    return this.#o.signal ? { signal: this.#o.signal } : {};
  }

  /** uid/gid of a --chown or USER value in `rootfs`, as buildkit resolves it. */
  async #owner(rootfs: string, spec: string | undefined, where: string): Promise<Owner> {
    if (spec === undefined || spec === '') return { uid: 0, gid: 0 };
    const [user = '', group] = spec.split(':');
    if (/^\d+$/.test(user) && group === undefined) return { uid: Number(user), gid: Number(user) };
    try {
      const u = await resolveUserInRootfs(rootfs, spec);
      return { uid: u.uid, gid: u.gid };
    } catch (e) {
      throw fail(
        where,
        `cannot find user ${JSON.stringify(spec)}: ${(e as Error).message}`,
        'ERR_INVALID_ARGUMENT',
      );
    }
  }

  async #workdir(stage: Stage, state: State, ins: Instruction, env: LexEnv): Promise<void> {
    const w = this.#expand(ins, ins.args, env);
    const dir = posix.normalize(posix.isAbsolute(w) ? w : posix.join(state.config.WorkingDir || '/', w));
    const clean = dir.length > 1 ? dir.replace(/\/+$/, '') : dir;
    state.config.WorkingDir = clean;
    const user = state.config.User;
    await this.#fsStep(stage, state, ins, `WORKDIR ${clean}`, { user: user ?? '' }, async (rootfs) => {
      if (clean === '/') return undefined;
      const owner = await this.#owner(rootfs, user, ins.where);
      const mtime = this.#epoch === undefined ? undefined : new Date(this.#epoch * 1000);
      await new RootWriter(rootfs, ins.where).mkdirp(clean, owner, mtime);
      return undefined;
    });
  }

  // ---- RUN ---------------------------------------------------------------------------------

  async #run(stage: Stage, state: State, ins: Instruction, _env: LexEnv): Promise<void> {
    const net = ins.flags.get('network');
    let network: 'none' | 'host' = this.#o.network ?? 'host';
    if (net !== undefined) {
      if (net === 'none' || net === 'host') network = net;
      else if (net !== 'default')
        throw fail(ins.where, `RUN --network takes none, host or default, not ${JSON.stringify(net)}`);
    }
    if (ins.flags.has('mount'))
      throw fail(ins.where, 'RUN --mount is not supported by stratum build', 'ERR_UNSUPPORTED');
    if (ins.flags.has('security'))
      throw fail(ins.where, 'RUN --security is not supported by stratum build', 'ERR_UNSUPPORTED');
    let args: string[];
    let stdin: string | undefined;
    if (ins.heredocs.length > 0) {
      if (ins.json) throw fail(ins.where, 'a heredoc needs the shell form of RUN');
      const first = ins.heredocs[0] as (typeof ins.heredocs)[number];
      const onlyHeredoc = /^<<-?\s*["']?[A-Za-z0-9_.-]+["']?$/.test(ins.args);
      if (ins.heredocs.length === 1 && onlyHeredoc) {
        args = [...state.shell, first.content];
      } else if (ins.heredocs.length === 1) {
        args = [...state.shell, ins.args.replace(/<<-?\s*["']?[A-Za-z0-9_.-]+["']?/, '').trim()];
        stdin = first.content;
      } else {
        throw fail(ins.where, 'RUN with more than one heredoc is not supported', 'ERR_UNSUPPORTED');
      }
    } else {
      args = commandOf(ins, state.shell);
    }
    // build args in scope go into RUN's environment (ENV wins), and into its cache key
    const argPairs: string[] = [];
    for (const [k, v] of state.args) {
      if (v !== undefined && envGet(state.config.Env, k) === undefined) argPairs.push(`${k}=${v}`);
    }
    const proxies: string[] = [];
    for (const p of PROXY_ARGS) {
      const v = this.#o.buildArgs?.[p];
      if (v !== undefined && !state.args.has(p)) proxies.push(`${p}=${v}`);
    }
    const createdBy = `RUN ${argPairs.length > 0 ? `|${argPairs.length} ${argPairs.join(' ')} ` : ''}${args.join(' ')}`;
    const runEnv = [...(state.config.Env ?? []), ...argPairs, ...proxies];
    if (envGet(runEnv, 'PATH') === undefined) runEnv.unshift(DEFAULT_PATH);
    const user = state.config.User;
    const cwd = state.config.WorkingDir || '/';
    await this.#fsStep(
      stage,
      state,
      ins,
      createdBy,
      { user: user ?? '', cwd, network, stdin: stdin ?? null, env: state.config.Env ?? [] },
      async (rootfs) => {
        const mounts: { source: string; destination: string; readOnly: boolean }[] = [];
        if (network === 'host') {
          for (const f of ['/etc/resolv.conf', '/etc/hosts']) {
            if ((await lstat(f).catch(() => undefined))?.isFile())
              mounts.push({ source: f, destination: f, readOnly: true });
          }
        }
        const stubs = await missingStubs(rootfs, [...MOUNT_STUBS]);
        let tail = '';
        const out = new Writable({
          write: (chunk: Buffer, _e, cb) => {
            tail = (tail + chunk.toString('utf8')).slice(-OUTPUT_TAIL);
            if (this.#o.output) this.#o.output.write(chunk, () => cb());
            else cb();
          },
        });
        const r = await runProcess({
          rootfs,
          args,
          env: runEnv,
          cwd,
          ...(user ? { user } : {}),
          network,
          mounts,
          stdin: stdin === undefined ? 'ignore' : (Readable.from([Buffer.from(stdin)]) as Readable),
          stdout: out,
          stderr: out,
          ...(this.#o.runtime ? { runtime: this.#o.runtime } : {}),
          ...(this.#o.runtimeRoot ? { runtimeRoot: this.#o.runtimeRoot } : {}),
          ...this.#signalOpts(),
        });
        if (r.exitCode !== 0) {
          const how = r.signal ? `was killed by ${r.signal}` : `exited with code ${r.exitCode}`;
          throw new BuildStepError(
            `${ins.where}: ${ins.text.slice(0, 200)}: the command ${how}${tail ? `; its output ended with:\n${tail.trimEnd()}` : ' (no output)'}`,
            r.exitCode,
            tail,
          );
        }
        return { stubs };
      },
    );
  }

  // ---- COPY / ADD --------------------------------------------------------------------------

  /** A read-only view of a stage's or image's root filesystem for `--from`. */
  async #fromRoot(
    ins: Instruction,
    name: string,
    stage: Stage,
  ): Promise<{ tree: SourceTree; key: unknown; release: () => Promise<void> }> {
    const dep = this.#stageNamed(name, stage.index);
    let layers: SnapshotLayer[];
    let key: unknown;
    if (dep) {
      const st = await this.#built(dep);
      layers = st.layers;
      key = { stage: st.key };
    } else {
      if (this.#stages.some((s) => s.name === name.toLowerCase() && s.index >= stage.index)) {
        throw fail(ins.where, `COPY --from=${name}: that stage comes later in the file`);
      }
      const img = await this.#resolveImage(name, ins.where);
      layers = img.layers;
      key = { image: img.descriptor.digest };
    }
    const dir = join(this.#workRoot, `from-${randomBytes(4).toString('hex')}`);
    await mkdir(dir, { recursive: true });
    if (layers.length === 0) {
      return { tree: SourceTree.rootfs(dir), key, release: () => rm(dir, { recursive: true, force: true }) };
    }
    const chain = await this.#snapshots.prepare(layers, this.#target, this.#signalOpts());
    await mountOverlay({ lowers: chain.lowers, target: dir });
    return {
      tree: SourceTree.rootfs(dir),
      key,
      release: async () => {
        await unmount(dir).catch(() => unmount(dir, { lazy: true }));
        await rm(dir, { recursive: true, force: true });
      },
    };
  }

  async #copy(stage: Stage, state: State, ins: Instruction, env: LexEnv): Promise<void> {
    const add = ins.keyword === 'ADD';
    for (const f of ['parents', 'exclude', 'checksum', 'keep-git-dir']) {
      if (ins.flags.has(f))
        throw fail(ins.where, `${ins.keyword} --${f} is not supported by stratum build`, 'ERR_UNSUPPORTED');
    }
    const flag = (n: string): string | undefined => {
      const v = ins.flags.get(n);
      if (v === true) throw fail(ins.where, `--${n} needs a value (--${n}=VALUE)`);
      return v === undefined ? undefined : this.#expand(ins, v, env);
    };
    const chown = flag('chown');
    const chmodText = flag('chmod');
    let chmod: number | undefined;
    if (chmodText !== undefined) {
      if (!/^[0-7]{3,4}$/.test(chmodText))
        throw fail(ins.where, `--chmod takes an octal mode like 0755, not ${JSON.stringify(chmodText)}`);
      chmod = Number.parseInt(chmodText, 8);
    }
    const from = flag('from');
    const words = ins.json
      ? ins.json.map((w) => this.#expand(ins, w, env))
      : ins.args
          .split(/[ \t\v\f\r]+/)
          .filter((w) => w !== '')
          .map((w) => (/^<<-?["']?[A-Za-z0-9_.-]+["']?$/.test(w) ? w : this.#expand(ins, w, env)));
    if (words.length < 2) throw fail(ins.where, `${ins.keyword} needs at least one source and a destination`);
    const destWord = words[words.length - 1] as string;
    const srcWords = words.slice(0, -1);
    const heredocSrc = srcWords.filter((w) => w.startsWith('<<'));
    const fileSrc = srcWords.filter((w) => !w.startsWith('<<'));
    for (const w of fileSrc) {
      if (/^[a-z][a-z0-9+.-]*:\/\//i.test(w) || w.startsWith('git@')) {
        if (!add)
          throw fail(ins.where, `COPY cannot fetch a URL (${w}); ADD can, or put the file in the context`);
        throw fail(
          ins.where,
          `ADD ${w}: fetching URLs is not supported by stratum build (it builds without the network); download the file into the context and COPY it`,
          'ERR_UNSUPPORTED',
        );
      }
    }
    const wd = state.config.WorkingDir || '/';
    const destDirForm = destWord.endsWith('/') || destWord === '.' || destWord.endsWith('/.');
    const dest = posix.normalize(posix.isAbsolute(destWord) ? destWord : posix.join(wd, destWord));
    let source: { tree: SourceTree; key: unknown; release: () => Promise<void> } | undefined;
    try {
      if (from !== undefined) {
        if (add) throw fail(ins.where, 'ADD does not take --from (use COPY --from)');
        source = await this.#fromRoot(ins, from, stage);
      }
      const tree = source?.tree ?? this.#context;
      const resolved: ResolvedSource[] = fileSrc.length > 0 ? await tree.resolve(fileSrc, ins.where) : [];
      const heredocs = heredocSrc.map((w) => {
        const name = w.replace(/^<<-?["']?/, '').replace(/["']$/, '');
        const h = ins.heredocs.find((x) => x.name === name);
        if (!h) throw fail(ins.where, `no heredoc body for ${w}`);
        let content = h.content;
        if (h.expand) {
          try {
            content = processHeredoc(h.content, env, this.#df.escape);
          } catch (e) {
            if (e instanceof LexError) throw fail(ins.where, e.message);
            throw e;
          }
        }
        return { name, content };
      });
      const count = resolved.length + heredocs.length;
      if (count > 1 && !destDirForm) {
        throw fail(
          ins.where,
          `when ${ins.keyword} has more than one source, the destination must be a directory and end with a /`,
        );
      }
      const inputs = {
        from: source?.key ?? 'context',
        sources: await tree.hash(resolved),
        heredocs: heredocs.map((h) => [h.name, h.content]),
        chown: chown ?? null,
        chmod: chmod ?? null,
      };
      const createdBy = `${ins.keyword} ${[...(from ? [`--from=${from}`] : []), ...(chown ? [`--chown=${chown}`] : []), ...(chmodText ? [`--chmod=${chmodText}`] : [])].join(' ')}${from || chown || chmodText ? ' ' : ''}${srcWords.join(' ')} ${destWord}`;
      await this.#fsStep(stage, state, ins, createdBy, inputs, async (rootfs) => {
        const owner = await this.#owner(rootfs, chown, ins.where);
        const w = new RootWriter(rootfs, ins.where);
        const now = new Date((this.#epoch ?? Math.floor(Date.now() / 1000)) * 1000);
        const intoDir = destDirForm || count > 1 || (await w.isDir(dest));
        const dirs: { dest: string; mtimeMs: number }[] = [];
        for (const s of resolved) {
          const first = s.entries[0];
          if (!first) continue;
          if (first.type === 'directory') {
            await w.mkdirp(dest, owner);
            for (const e of s.entries.slice(1)) {
              const to = posix.join(dest, e.rel);
              await w.put(e, to, { owner, parentOwner: owner, ...(chmod === undefined ? {} : { chmod }) });
              if (e.type === 'directory') dirs.push({ dest: to, mtimeMs: e.mtimeMs });
            }
            continue;
          }
          if (add && first.type === 'file' && (await isArchive(first.abs))) {
            const host = await w.mkdirp(dest, owner);
            await applyLayer(host, createReadStream(first.abs), {
              form: 'plain',
              ...(chown === undefined ? {} : { owner }),
              ...this.#signalOpts(),
            });
            w.forgetAll();
            continue;
          }
          const to = intoDir ? posix.join(dest, posix.basename(s.name)) : dest;
          await w.put(first, to, { owner, parentOwner: owner, ...(chmod === undefined ? {} : { chmod }) });
        }
        for (const h of heredocs) {
          const to = intoDir ? posix.join(dest, h.name) : dest;
          await w.putBytes(Buffer.from(h.content), to, {
            owner,
            parentOwner: owner,
            mode: chmod ?? 0o644,
            mtime: now,
          });
        }
        for (const d of dirs.reverse()) await w.touchDir(d.dest, d.mtimeMs);
        return undefined;
      });
    } finally {
      await source?.release();
    }
  }

  // ---- the image ---------------------------------------------------------------------------

  async #write(state: State): Promise<BuildResult> {
    const last = state.history[state.history.length - 1];
    const created =
      this.#epoch !== undefined
        ? new Date(this.#epoch * 1000).toISOString()
        : (last?.created ?? new Date().toISOString());
    const c = state.config;
    const containerConfig: MutableConfig = {};
    // a stable key order
    for (const k of [
      'User',
      'ExposedPorts',
      'Env',
      'Entrypoint',
      'Cmd',
      'Volumes',
      'WorkingDir',
      'Labels',
      'StopSignal',
      'ArgsEscaped',
      'Healthcheck',
      'OnBuild',
      'Shell',
    ] as const) {
      const v = c[k];
      if (v !== undefined) (containerConfig as Record<string, unknown>)[k] = v;
    }
    const config: ImageConfig = {
      created,
      ...(state.author ? { author: state.author } : {}),
      architecture: state.platform.architecture,
      os: state.platform.os,
      ...(state.platform.variant ? { variant: state.platform.variant } : {}),
      config: containerConfig,
      rootfs: { type: 'layers', diff_ids: state.layers.map((l) => l.diffId) },
      history: state.history,
    };
    const layers = state.layers.map((l) => ociLayer(l.descriptor));
    const signal = this.#signalOpts();
    const written = await writeImage(this.#target, config, layers, undefined, signal);
    const tags: string[] = [];
    for (const t of this.#o.tags ?? []) {
      await this.#target.tag(written.manifest, t, signal);
      tags.push(t);
      this.#event({ type: 'tagged', ref: t });
    }
    return {
      manifest: written.manifest,
      config: written.config,
      imageId: written.config.digest,
      tags,
      steps: this.steps,
      cacheHits: this.cacheHits,
      layers: state.layers.length,
      builtLayers: this.builtLayers,
    };
  }
}

/** An error of a step, its message starting with the Dockerfile's file and line. */
function located(e: unknown, where: string): unknown {
  const err = isStratumError(e) ? e : fromSystemError(e);
  if (err === undefined || err.message.startsWith(`${where}:`) || err.code === 'ERR_ABORTED') return e;
  if (err instanceof BuildStepError) return err;
  return new StratumError(err.code, `${where}: ${err.message}`, { cause: e });
}

/** Docker layer media types become their OCI twins (same bytes) in the OCI manifest we write. */
function ociLayer(d: Descriptor): Descriptor {
  if (d.mediaType === MediaType.DockerLayerGzip) return { ...d, mediaType: MediaType.OciLayerGzip };
  return d;
}

/** Whether a file is a tar archive (plain, gzip or zstd), as ADD extracts it. */
async function isArchive(path: string): Promise<boolean> {
  const fh = await open(path, 'r');
  try {
    const buf = Buffer.alloc(512);
    const { bytesRead } = await fh.read(buf, 0, 512, 0);
    if (bytesRead >= 2 && buf[0] === 0x1f && buf[1] === 0x8b) return true;
    if (bytesRead >= 4 && buf.readUInt32LE(0) === 0xfd2fb528) return true;
    return bytesRead === 512 && buf.subarray(257, 262).toString('latin1') === 'ustar';
  } finally {
    await fh.close();
  }
}

/** Build the image a Dockerfile describes and write it to the store (tagged with `tags`). */
export async function build(opts: BuildOptions): Promise<BuildResult> {
  if (opts.signal?.aborted) throw abortError(opts.signal);
  const dockerfilePath = opts.dockerfile ?? join(opts.context, 'Dockerfile');
  let text = opts.dockerfileText;
  if (text === undefined) {
    try {
      text = await readFile(dockerfilePath, 'utf8');
    } catch (e) {
      throw new StratumError(
        'ERR_NOT_FOUND',
        `cannot read the Dockerfile ${dockerfilePath}: ${(e as Error).message}`,
        {
          cause: e,
        },
      );
    }
  }
  const df = parseDockerfile(
    text,
    opts.dockerfileText === undefined ? dockerfilePath : (opts.dockerfile ?? 'Dockerfile'),
  );
  for (const t of opts.tags ?? []) {
    if (isDigest(t))
      throw new StratumError('ERR_INVALID_ARGUMENT', `cannot tag a build with a digest (${t})`);
  }
  // buildkit: a `<Dockerfile>.dockerignore` next to the Dockerfile wins over the context's
  let ignore: string[] | undefined;
  if (opts.dockerfileText === undefined) {
    const own = await readFile(`${dockerfilePath}.dockerignore`, 'utf8').catch(() => undefined);
    if (own !== undefined) ignore = parseDockerignore(own);
  }
  const context = await SourceTree.context(opts.context, ignore);
  const snapshots = await Snapshots.open(opts.store.root);
  const workBase = join(opts.store.root, BUILD_CACHE_DIR, BUILD_WORK_DIR);
  await mkdir(workBase, { recursive: true });
  // a build killed with -9 may have left a RUN container running over its work directory
  await reapProcesses({
    ...(opts.runtimeRoot ? { runtimeRoot: opts.runtimeRoot } : {}),
    ...(opts.runtime ? { runtime: opts.runtime } : {}),
  }).catch(() => {});
  await cleanDeadWork(workBase);
  const workRoot = join(workBase, `build-${process.pid}-${randomBytes(6).toString('hex')}`);
  await mkdir(workRoot, { recursive: true });
  try {
    return await opts.store.withLease(async (target) => {
      const b = new Builder(opts, df, target, snapshots, context, workRoot);
      return b.run();
    });
  } finally {
    await unmountAll(workRoot);
    await rm(workRoot, { recursive: true, force: true });
  }
}
