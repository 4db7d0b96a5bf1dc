// Retry timing: exponential backoff with full jitter, and the Retry-After header (delta
// seconds or an HTTP date), capped so a hostile server cannot park us for hours.

import { setTimeout as sleep } from 'node:timers/promises';
import { abortError } from '../errors/errors.js';

export interface BackoffOptions {
  /** First delay before jitter (ms). Default 200. */
  readonly initialMs?: number;
  /** Largest delay before jitter (ms). Default 10 000. */
  readonly maxMs?: number;
  /** Largest Retry-After we honour (ms); longer ones are cut to this. Default 60 000. */
  readonly maxRetryAfterMs?: number;
}

export const DEFAULT_BACKOFF: Required<BackoffOptions> = {
  initialMs: 200,
  maxMs: 10_000,
  maxRetryAfterMs: 60_000,
};

/** Delay before retry number `attempt` (0-based): random in [d/2, d] with d = initial·2^attempt. */
export function backoffDelay(attempt: number, opts: Required<BackoffOptions>): number {
  const d = Math.min(opts.maxMs, opts.initialMs * 2 ** Math.min(attempt, 30));
  return d / 2 + Math.random() * (d / 2);
}

/** Parse Retry-After (seconds or HTTP date) into milliseconds; undefined if absent or malformed. */
export function parseRetryAfter(value: string | undefined, now = Date.now()): number | undefined {
  if (value === undefined) return undefined;
  const v = value.trim();
  if (/^\d{1,10}$/.test(v)) return Number(v) * 1000;
  // an HTTP date names its weekday and month; Date.parse alone would take '-5' for a year
  if (v.length > 64 || !/^[A-Za-z]{3},/.test(v)) return undefined;
  const t = Date.parse(v);
  if (Number.isNaN(t)) return undefined;
  return Math.max(0, t - now);
}

/** Sleep, rejecting with ERR_ABORTED when the signal fires. */
export async function delay(ms: number, signal?: AbortSignal): Promise<void> {
  if (signal?.aborted) throw abortError(signal);
  try {
    await sleep(ms, undefined, signal ? { signal } : {});
  } catch (e) {
    if (signal?.aborted) throw abortError(signal);
    throw e;
  }
}
